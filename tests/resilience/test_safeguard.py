"""Safeguard copies with real worker processes: a result that took long and that a dependent
still awaits gets a second copy, so SIGKILLing the worker that computed it loses no work."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from engine.helpers import poll

from .helpers import add

#: a run long enough to be worth a copy under the default ``scheduler.safeguard-lineage``
SLOW_S = 0.7


def counted_slow(path: str, x: int) -> int:
    """``x + 1`` after ``SLOW_S``, noting each run in a file (runs are counted across
    processes)."""
    time.sleep(SLOW_S)
    with open(path, "a") as log:
        log.write("run\n")
    return x + 1


def gate(path: str, x: int) -> int:
    """``x`` once ``path`` exists: holds the dependent back while the test kills a worker."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def runs(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


@pytest.mark.parametrize("n_workers", [2])
@pytest.mark.parametrize(
    ("cluster_config", "computed"),
    [({}, 1), ({"scheduler.safeguard-lineage": None}, 2)],
    ids=["safeguarded", "as-dask"],
)
def test_a_killed_worker_s_costly_intermediate_survives_in_its_copy(
    fragile_cluster, fragile_client, worker_processes, tmp_path, computed
):
    cluster, client = fragile_cluster, fragile_client
    log, opened = tmp_path / "runs", tmp_path / "open"
    costly = client.submit(counted_slow, str(log), 1)
    held_back = client.submit(gate, str(opened), 10)
    total = client.submit(add, costly, held_back)
    poll(lambda: runs(log) == 1, 10, "the costly task ran")
    poll(lambda: costly.status == "finished", 10, "the costly result in memory")
    [finished] = cluster.scheduler.transitions(keys=[costly.key], finish="memory")
    holder = finished.worker
    if computed == 1:
        poll(lambda: len(client.who_has([costly])[costly.key]) == 2, 10, "a safeguard copy")
        [copied] = client.get_events("safeguard-copy")
        [copy] = set(client.who_has([costly])[costly.key]) - {holder}
        assert copied[1]["key"] == costly.key
        assert (copied[1]["from"], copied[1]["to"]) == (holder, copy)
        assert copied[1]["lineage"] >= SLOW_S
    else:
        assert client.get_events("safeguard-copy") == ()
    process = worker_processes.process(holder)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    poll(lambda: holder not in cluster.scheduler.workers, 10, "the dead worker removed")
    opened.touch()
    assert total.result(timeout=20) == 12
    assert runs(log) == computed
    assert len(cluster.scheduler.transitions(keys=[costly.key], finish="processing")) == computed
