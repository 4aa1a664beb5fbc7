"""A worker that dies of its task comes back under its nanny, and the record says why."""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine.helpers import inc, poll

from storied import Client, KilledWorker, LocalCluster, WorkerPlugin, config

from .helpers import events, workers_by_name


def die_once(marker: str, how: str) -> str:
    """Take the worker down the first time; the retry, in the restarted worker, survives."""
    if os.path.exists(marker):
        return "survived"
    Path(marker).touch()
    if how == "exit":
        os._exit(1)
    elif how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "segfault":
        ctypes.string_at(0)
    raise ValueError(f"unknown way to die: {how}")


def die_always(attempts_log: str) -> None:
    """Note the attempt where the test can count it, then take the worker down."""
    with open(attempts_log, "a") as log:
        log.write(f"{os.getpid()}\n")
    os._exit(13)


@pytest.fixture(scope="module")
def one_worker() -> Iterator[tuple[LocalCluster, Client]]:
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        yield cluster, client


@pytest.mark.parametrize(
    ("how", "cause"),
    [
        ("exit", {"exit-code": 1, "signal": None}),
        ("sigkill", {"exit-code": None, "signal": "SIGKILL"}),
        ("segfault", {"exit-code": None, "signal": "SIGSEGV"}),
    ],
)
def test_a_worker_killed_by_its_task_comes_back(one_worker, tmp_path, how, cause):
    cluster, client = one_worker
    [before] = client.scheduler_info()["workers"].values()
    future = client.submit(die_once, str(tmp_path / "died"), how, pure=False)

    assert future.result(timeout=30) == "survived", "the task ran again in the new worker"
    after = workers_by_name(client)[before["name"]]
    assert after["pid"] != before["pid"]
    assert after["nanny_pid"] == before["nanny_pid"] == cluster.workers[before["name"]].pid
    assert client.submit(inc, 1, pure=False).result(timeout=10) == 2

    [removed] = [
        e for e in events(client, "all", "remove-worker") if e["worker"] == before["address"]
    ]
    assert {key: removed[key] for key in cause} == cause
    assert removed["lost-tasks"] == [future.key]
    assert f"worker process {before['pid']}" in removed["reason"]
    [restart] = poll(
        lambda: [
            e
            for e in events(client, "nanny", "worker-restart")
            if e["previous-pid"] == before["pid"]
        ],
        what="the nanny's worker-restart event",
    )
    assert restart["nanny"] == before["nanny"]
    assert (restart["worker"], restart["pid"]) == (after["address"], after["pid"])
    assert {key: restart[key] for key in cause} == cause
    assert restart["delay"] == 0, "a worker that had joined is restarted at once"


def test_a_task_that_kills_every_worker_ends_in_killed_worker_and_the_cluster_recovers(tmp_path):
    attempts_log = tmp_path / "attempts"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, allowed_failures=2) as cluster,
        Client(cluster) as client,
    ):
        doomed = client.submit(die_always, str(attempts_log))
        with pytest.raises(KilledWorker, match=doomed.key):
            doomed.result(timeout=30)
        attempts = attempts_log.read_text().split()
        assert len(attempts) == 3, "allowed-failures 2: the third death ends the task"
        assert len(set(attempts)) == 3, "each attempt ran in a different worker process"

        poll(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=20)
        assert set(workers_by_name(client)) == {"0", "1"}
        assert client.gather(client.map(inc, range(20))) == list(range(1, 21))
        removals = [
            e for e in events(client, "all", "remove-worker") if doomed.key in e["lost-tasks"]
        ]
        assert [(e["exit-code"], e["signal"]) for e in removals] == [(13, None)] * 3


class DieOnSetup(WorkerPlugin):
    """Kills every worker that joins, before it has told its nanny it is up."""

    def setup(self, worker):
        os._exit(7)


def test_a_worker_dying_at_start_up_is_restarted_with_growing_delays():
    with (
        config.set({"nanny.restart-backoff": "50ms"}),
        LocalCluster(n_workers=1, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(DieOnSetup(), name="die-on-setup")
        restarts = poll(
            lambda: len(r := events(client, "nanny", "worker-restart")) >= 4 and r, timeout=20
        )
        client.unregister_worker_plugin("die-on-setup")
        assert [r["delay"] for r in restarts[:4]] == [0.0, 0.05, 0.1, 0.2]
        assert [r["exit-code"] for r in restarts[:4]] == [7] * 4
        assert restarts[0]["previous-worker"], "the first one had joined"
        assert not restarts[1]["previous-worker"], "the next ones died before joining"

        poll(lambda: len(client.scheduler_info()["workers"]) == 1, timeout=20)
        assert client.submit(inc, 1).result(timeout=10) == 2
        assert cluster.workers["0"].process.poll() is None, "the nanny never gave up"


@pytest.mark.parametrize("library", ["storied", "dask.distributed"])
def test_dask_s_nanny_behaviour_with_only_the_import_changed(library, tmp_path):
    """The same user code against dask.distributed itself: the worker comes back, the task
    runs again there."""
    lib = importlib.import_module(library)
    with (
        lib.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        lib.Client(cluster) as client,
    ):
        [before] = client.scheduler_info()["workers"].values()
        [before_pid] = client.run(os.getpid).values()
        assert before["nanny"]
        future = client.submit(die_once, str(tmp_path / "died"), "exit", pure=False)
        assert future.result(timeout=60) == "survived"
        [after] = client.scheduler_info()["workers"].values()
        [after_pid] = client.run(os.getpid).values()
        assert after["name"] == before["name"]
        assert after["nanny"] == before["nanny"]
        assert after_pid != before_pid
