"""Queuing and replicas on a real cluster (worker processes, TCP on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from storied import Client, LocalCluster, config
from tests.engine.helpers import poll


def slow_inc(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x + 1


@pytest.fixture
def one_worker() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=None, nanny=False
    ) as cluster:
        yield cluster


def test_root_tasks_queue_on_the_scheduler_and_a_new_worker_takes_them(one_worker):
    scheduler = one_worker.scheduler
    with Client(one_worker) as client:
        futures = client.map(slow_inc, range(40), seconds=0.1)
        poll(lambda: len(scheduler.state.queued) >= 30, 10, "tasks queued")
        # one thread, saturation 1.1: two tasks on the worker at most, the rest on the scheduler
        assert [len(ws.processing) for ws in scheduler.state.workers.values()] == [2]
        first = next(iter(scheduler.workers))
        one_worker.scale(2)
        poll(lambda: len(scheduler.workers) == 2, 30, "second worker joined")
        assert client.gather(futures) == list(range(1, 41))
        holders = client.who_has(futures)
        second = (set(scheduler.workers) - {first}).pop()
        assert sum(holders[f.key] == [second] for f in futures) >= 5, "new worker took work"
        story = [(entry.start, entry.finish) for entry in client.story(futures[-1].key)]
        assert ("waiting", "queued") in story and ("queued", "processing") in story


def test_infinite_saturation_sends_every_task_at_once():
    with (
        config.set({"scheduler.worker-saturation": "inf"}),
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None, nanny=False) as cl,
        Client(cl) as client,
    ):
        futures = client.map(slow_inc, range(20), seconds=0.05)
        poll(lambda: sum(len(ws.processing) for ws in cl.scheduler.state.workers.values()) >= 15)
        assert not cl.scheduler.state.queued
        assert client.gather(futures) == list(range(1, 21))


@pytest.mark.parametrize("bad", ["lots", 0, -1])
def test_a_bad_saturation_is_refused_with_what_to_do(bad):
    from storied.scheduler.server import Scheduler

    with pytest.raises(ValueError, match="worker-saturation must be a number above 0"):
        Scheduler(worker_saturation=bad)


def test_who_has_follows_every_copy_a_worker_fetches_and_drops(client, cluster):
    a, b = sorted(cluster.scheduler.workers)
    x = client.submit(slow_inc, 1, 0, workers=[a])
    assert x.result(timeout=10) == 2
    assert client.who_has([x]) == {x.key: [a]}
    y = client.submit(slow_inc, x, 1.0, workers=[b])
    poll(lambda: sorted(client.who_has([x])[x.key]) == [a, b], 10, "b's copy reported")
    assert y.result(timeout=10) == 3
    # b dropped its copy once y was done: the scheduler heard of that too
    poll(lambda: client.who_has([x]) == {x.key: [a]}, 10, "b's copy reported dropped")


def test_replicate_and_rebalance_as_dask_shapes_them(client, cluster):
    a, b = sorted(cluster.scheduler.workers)
    futures = client.map(slow_inc, range(6), seconds=0, workers=[a])
    client.gather(futures)
    client.replicate(futures)
    assert all(sorted(w) == [a, b] for w in client.who_has(futures).values())
    client.replicate(futures, n=1)
    assert all(len(w) == 1 for w in client.who_has(futures).values())
    client.replicate(futures[:1], n=2, workers=[a, b])
    assert sorted(client.who_has(futures[:1])[futures[0].key]) == [a, b]
    client.rebalance(futures)
    counts = [sum(w in ws for ws in client.who_has(futures).values()) for w in (a, b)]
    assert abs(counts[0] - counts[1]) <= 1, counts
    assert client.gather(futures) == list(range(1, 7))
    actions = [e["action"] for _, e in client.get_events("replicas")]
    assert actions[-4:] == ["replicate", "replicate", "replicate", "rebalance"]


def test_replicate_checks_its_arguments_at_the_caller(client):
    future = client.submit(slow_inc, 1, 0)
    with pytest.raises(ValueError, match="n must be"):
        client.replicate([future], n=0)
    with pytest.raises(TypeError, match="workers must be"):
        client.replicate([future], workers=3)
    with pytest.raises(ValueError, match="unknown workers"):
        client.replicate([future], workers=["tcp://nowhere:1"])


def replica_counts(client) -> list[list[int]]:
    """Dask's replicate/rebalance example, reduced to how many copies each result has."""
    futures = client.map(slow_inc, range(4), seconds=0, pure=False)
    client.gather(futures)
    counts = []
    for step in (
        lambda: client.replicate(futures),
        lambda: client.replicate(futures, n=1),
        lambda: client.rebalance(futures),
    ):
        assert step() is None
        counts.append(sorted(len(w) for w in client.who_has(futures).values()))
    return counts


def test_replicate_counts_match_dask(client, dask_client):
    expected = replica_counts(dask_client)
    assert replica_counts(client) == expected == [[2, 2, 2, 2], [1, 1, 1, 1], [1, 1, 1, 1]]
