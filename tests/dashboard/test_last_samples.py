"""A finished run's workers show the last memory and CPU each sent, read from the ledger's
``worker-metrics`` events, however far back a quiet worker's last sample lies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storied.dashboard import views
from storied.dashboard.history import SAMPLE_PAGE, LedgerCatalog
from storied.record import Ledger, Record
from storied.scheduler.telemetry import METRICS_TOPIC


def sample(worker: str, n: int) -> dict[str, object]:
    return {
        "worker": worker,
        "name": worker[-1],
        "time": 1_700_000_000.0 + n,
        "memory": 2**20 * n,
        "cpu": float(n % 100),
    }


def test_each_workers_last_sample_even_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    record = Record(ledger=Ledger(path))
    for worker in ("tcp://w:1", "tcp://w:2", "tcp://w:3"):  # w:3 never sent a sample
        record.event(["all"], {"action": "add-worker", "worker": worker, "nthreads": 1}, "s")
    record.event([METRICS_TOPIC], sample("tcp://w:1", 1), "s")
    record.event([METRICS_TOPIC], sample("tcp://w:1", 2), "s")  # w:1 then went quiet
    busy = 2 * SAMPLE_PAGE + 7  # w:2's samples after it: more than two pages of them
    for n in range(3, 3 + busy):
        record.event([METRICS_TOPIC], sample("tcp://w:2", n), "s")
    record.close()

    async def read() -> tuple[dict[str, dict[str, object]], list[dict[str, object]]]:
        run = await LedgerCatalog([path]).run(None)
        return await run.last_samples(), await views.workers(run)

    last, rows = asyncio.run(read())
    assert last["tcp://w:1"] == sample("tcp://w:1", 2)
    assert last["tcp://w:2"] == sample("tcp://w:2", 2 + busy)
    assert "tcp://w:3" not in last
    shown = {row["address"]: (row["memory"], row["cpu"]) for row in rows}
    assert shown == {
        "tcp://w:1": (2 * 2**20, 2.0),
        "tcp://w:2": (2**20 * (2 + busy), float((2 + busy) % 100)),
        "tcp://w:3": (None, None),
    }
