"""A dead worker's results are recomputed only when no copy of them survives."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from engine.helpers import poll


def counted(path: str, x: int) -> int:
    """``x + 1``, noting each run in a file (the test counts computations across processes)."""
    with open(path, "a") as log:
        log.write("run\n")
    return x + 1


def runs(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


@pytest.mark.parametrize("n_workers", [2])
@pytest.mark.parametrize("copied", [True, False])
def test_a_lost_result_is_recomputed_only_without_a_copy(
    fragile_cluster, fragile_client, worker_processes, tmp_path, copied
):
    cluster, client = fragile_cluster, fragile_client
    a, b = sorted(cluster.scheduler.workers)
    log = tmp_path / "runs"
    x = client.submit(counted, str(log), 1, workers=[a], allow_other_workers=True)
    assert x.result(timeout=10) == 2
    if copied:
        client.replicate([x])
        assert sorted(client.who_has([x])[x.key]) == [a, b]
    process = worker_processes.process(a)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    poll(lambda: a not in cluster.scheduler.workers, 10, "the dead worker removed")
    assert x.result(timeout=10) == 2
    poll(lambda: client.who_has([x]) == {x.key: [b]}, 10, "x held by b")
    computed = 1 if copied else 2
    assert runs(log) == computed
    assert len(cluster.scheduler.transitions(keys=[x.key], finish="processing")) == computed
