"""Work stealing and paused workers on a real cluster (worker processes, TCP on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from storied import Client, LocalCluster, Worker, config, wait
from tests.engine.helpers import poll

#: two long tasks for every short one would be the same count on each worker, but not the
#: same work: the long ones all land on the first worker (placement alternates by count)
UNEVEN = [0.4 if i % 2 == 0 else 0.004 for i in range(8)]


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture
def eager_two_workers() -> Iterator[LocalCluster]:
    """Two one-thread workers sent every task at once (``worker-saturation: inf``), so the
    scheduler's placement alone decides who runs what, unless tasks are stolen."""
    with (
        config.set({"scheduler.worker-saturation": "inf"}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, nanny=False
        ) as cluster,
    ):
        yield cluster


def makespan(client: Client, durations: list[float], **options: object) -> float:
    start = time.monotonic()
    futures = client.map(nap, durations, pure=False, **options)
    assert client.gather(futures) == durations
    elapsed = time.monotonic() - start
    client.cancel(futures)
    return elapsed


def set_stealing(cluster: LocalCluster, enabled: bool) -> None:
    cluster.scheduler.extensions["stealing"].enabled = enabled


def test_stealing_shortens_the_makespan_of_uneven_tasks(eager_two_workers):
    """Durations differing 100x: without stealing the first worker runs all four long tasks
    (1.6 s) while the second idles; with it, about half move (0.8 s). Measured side by side,
    twice each, interleaved."""
    cluster = eager_two_workers
    with Client(cluster) as client:
        makespan(client, [0.01, 0.01])  # functions shipped, durations known
        timings: dict[bool, list[float]] = {True: [], False: []}
        for enabled in (False, True, False, True):
            set_stealing(cluster, enabled)
            timings[enabled].append(makespan(client, UNEVEN))
        assert max(timings[True]) < 0.75 * min(timings[False]), timings
        assert min(timings[False]) >= 1.6

        events = [msg for _, msg in client.get_events("stealing")]
        confirmed = [e for e in events if e["action"] == "steal-confirm"]
        assert confirmed, events
        steal = confirmed[-1]
        assert steal["worker_state"] in ("ready", "waiting")
        assert {steal["victim"], steal["thief"]} == set(cluster.scheduler.workers)
        story = client.story(steal["key"])
        moved = [
            e
            for e in story
            if e.where == "scheduler" and (e.start, e.finish) == ("processing", "processing")
        ]
        assert [e.stimulus_id for e in moved] == [steal["stimulus_id"]]
        given_back = [
            e for e in story if e.where == steal["victim"] and e.stimulus_id == steal["stimulus_id"]
        ]
        # a task handed to the executor ahead of a thread (worker.executor-lookahead) is
        # taken back from it first
        assert [(e.start, e.finish) for e in given_back] in (
            [("ready", "released")],
            [("executing", "ready"), ("ready", "released")],
        )


def test_loose_restrictions_let_an_idle_worker_steal(eager_two_workers):
    cluster = eager_two_workers
    first, second = list(cluster.scheduler.workers)
    with Client(cluster) as client:
        loose = client.map(nap, [0.2] * 6, workers=[first], allow_other_workers=True, pure=False)
        strict = client.map(nap, [0.01] * 6, workers=[first], pure=False)
        wait(loose + strict, timeout=30)
        holders = client.who_has(loose + strict)
        assert any(holders[f.key] == [second] for f in loose), "the idle worker took some"
        assert all(holders[f.key] == [first] for f in strict), "strict ones stay"


def pause(dask_worker: Worker) -> None:
    dask_worker.memory._set_paused(True, dask_worker.memory.usage())


def resume(dask_worker: Worker) -> None:
    dask_worker.memory._set_paused(False, dask_worker.memory.usage())


def test_a_paused_worker_is_sent_no_new_tasks_and_its_waiting_ones_move():
    settings = {f"worker.memory.{name}": False for name in ("target", "spill", "pause")}
    with (
        config.set({**settings, "worker.memory.terminate": False}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="4GB",
            dashboard_address=None,
            nanny=False,
        ) as cluster,
        Client(cluster) as client,
    ):
        scheduler = cluster.scheduler
        first, second = list(scheduler.workers)
        client.run(pause, workers=[first])
        poll(lambda: scheduler.state.workers[first].status == "paused", what="paused")
        futures = client.map(nap, [0.01] * 10, pure=False)
        wait(futures, timeout=30)
        assert {w for ws in client.who_has(futures).values() for w in ws} == {second}

        client.run(resume, workers=[first])
        poll(lambda: scheduler.state.workers[first].status == "running", what="running again")
        futures = client.map(nap, [0.05] * 10, pure=False)
        wait(futures, timeout=30)
        assert {w for ws in client.who_has(futures).values() for w in ws} == {first, second}
