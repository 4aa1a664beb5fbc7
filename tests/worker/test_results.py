"""What a worker does with a task's result: pickled only when it leaves the worker, weighed
without pickling, and an unpicklable one failing where it is fetched, with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from storied import Client, LocalCluster, wait
from storied.graph.execute import preload_dask


class Counted:
    """A result that notes in a file each time it is pickled; large by ``sizeof``'s rules, so
    it never travels with the task-finished message."""

    nbytes = 100_000

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[type[Counted], tuple[str]]:
        with open(self.path, "a") as log:
            log.write("pickled\n")
        return Counted, (self.path,)


def make_counted(path: str) -> Counted:
    return Counted(path)


def path_of(counted: Counted) -> str:
    return counted.path


def make_lock(_: int) -> threading.Lock:
    return threading.Lock()


def lock_type(lock: threading.Lock) -> str:
    return type(lock).__name__


def times_pickled(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_result_is_pickled_only_when_it_leaves_its_worker(client: Client, tmp_path: Path):
    a, b = sorted(client.scheduler_info()["workers"])
    log = tmp_path / "pickles"
    made = client.submit(make_counted, str(log), workers=[a])
    assert client.submit(path_of, made, workers=[a]).result(timeout=10) == str(log)
    assert times_pickled(log) == 0, "used where it was made: never pickled"
    assert made.result(timeout=10).path == str(log)
    assert times_pickled(log) == 1
    assert client.submit(path_of, made, workers=[b], pure=False).result(timeout=10) == str(log)
    assert times_pickled(log) == 1, "the pickle made for the client serves the peer too"


def test_the_reported_size_is_sizeof_not_the_pickle(client: Client, cluster: LocalCluster):
    made = client.submit(np.zeros, 10_000)
    wait(made, timeout=10)
    assert cluster.scheduler.state.tasks[made.key].nbytes == 80_000


def test_an_unpicklable_result_fails_when_fetched_as_in_dask(client: Client):
    lock = client.submit(make_lock, 1)
    wait(lock, timeout=10)
    assert lock.status == "finished"
    with pytest.raises(TypeError, match=r"could not be sent from its worker.*lock"):
        lock.result(timeout=10)


def test_a_task_needing_an_unpicklable_result_from_a_peer_fails_clearly(client: Client):
    """Dask's dependent waits forever here; storied's fails with the reason."""
    a, b = sorted(client.scheduler_info()["workers"])
    lock = client.submit(make_lock, 2, workers=[a])
    assert client.submit(lock_type, lock, workers=[a]).result(timeout=10) == "lock"
    needs = client.submit(lock_type, lock, workers=[b], pure=False)
    with pytest.raises(TypeError, match=f"could not be sent from {a}.*lock"):
        needs.result(timeout=10)
    events = [msg for _, msg in client.get_events("transfer")]
    assert any(
        e["action"] == "send-failed" and e["key"] == lock.key and e["from"] == a for e in events
    )


def test_a_fresh_worker_has_dask_imported_before_its_first_graph():
    """So that the first collection a new cluster computes does not wait for the import."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as fresh,
    ):
        imported = fresh.run(lambda: "dask._task_spec" in sys.modules)
    assert list(imported.values()) == [True]


def test_a_worker_without_dask_starts_all_the_same():
    code = (
        "import sys; sys.modules['dask'] = None; "
        "from storied.graph.execute import preload_dask; preload_dask(); print('started')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.stdout.strip() == "started", done.stderr
    preload_dask()  # and with dask installed, in this process
    assert "dask._task_spec" in sys.modules
