"""What the memory tests share: a cluster of one worker process with a memory budget."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import cloudpickle

from storied import Client, LocalCluster, Worker, config

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1_000_000
#: each result the tests make: large enough to weigh, small enough for a shared machine
CHUNK = 10 * MB


@contextlib.contextmanager
def budgeted_client(memory_limit: str, **fractions: float | bool) -> Iterator[Client]:
    """A client of one worker process (one thread) with ``memory_limit``, and
    ``worker.memory`` set to ``fractions`` (the rest off: each test looks at one threshold)."""
    settings: dict[str, Any] = {
        f"worker.memory.{name}": fractions.get(name, False)
        for name in ("target", "spill", "pause", "terminate")
    }
    with (
        config.set(settings),
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit=memory_limit, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def chunk(i: int) -> bytes:
    """A result of ``CHUNK`` bytes that says which one it is."""
    return bytes([i % 256]) * CHUNK


#: the most the runaway task takes, so that a failing test cannot take the machine down
CAP = 2_000_000_000
#: how long the runaway task holds what it took before it gives up waiting to be killed
HOLD = 30.0


def allocate_without_bound(attempts_log: str) -> int:
    """Note the attempt, then hoard 10 MB at a time up to ``CAP``, and hold it for up to
    ``HOLD`` seconds (a busy machine may be slow to notice)."""
    with open(attempts_log, "a") as log:
        log.write(f"{os.getpid()}\n")
    hoard = []
    while len(hoard) * CHUNK < CAP:
        hoard.append(b"x" * CHUNK)
    time.sleep(HOLD)
    return len(hoard)


def memory_events(client: Client, action: str) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events("memory") if msg.get("action") == action]


def spill_totals(client: Client) -> dict[str, int]:
    """Keys spilled and read back, summed over the worker's ``spill`` reports so far."""
    reports = memory_events(client, "spill")
    return {
        "spilled": sum(r["spilled-keys"] for r in reports),
        "unspilled": sum(r["unspilled-keys"] for r in reports),
    }


def data_on_worker(dask_worker: Worker) -> dict[str, Any]:
    """What the worker holds in memory and on disk, and the files in its local directory."""
    data = dask_worker.data
    storage = os.path.join(dask_worker.memory.local_directory, "storage")
    return {
        "directory": dask_worker.memory.local_directory,
        "in-memory": len(data.fast),
        "spilled": len(data.slow),
        "spilled-bytes": data.spilled_bytes,
        "managed": data.memory_bytes,
        "files": sorted(os.listdir(storage)) if os.path.isdir(storage) else [],
        "rss": dask_worker.memory.usage().rss,
    }
