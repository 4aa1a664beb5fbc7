"""Tasks that launch tasks (Dask's "Launch Tasks from Tasks" page, with only the import
changed): recursive Fibonacci that secedes while it waits, on 2 workers of one thread each."""

from __future__ import annotations

import asyncio
import threading

import pytest

from storied import (
    Client,
    LocalCluster,
    as_completed,
    get_client,
    get_worker,
    rejoin,
    secede,
    worker_client,
)
from tests.engine.helpers import poll


def fib_worker_client(n):
    if n < 2:
        return n
    with worker_client() as client:
        a_future = client.submit(fib_worker_client, n - 1)
        b_future = client.submit(fib_worker_client, n - 2)
        a, b = client.gather([a_future, b_future])
    return a + b


def fib_secede_rejoin(n):
    if n < 2:
        return n
    client = get_client()
    a_future = client.submit(fib_secede_rejoin, n - 1)
    b_future = client.submit(fib_secede_rejoin, n - 2)
    secede()
    a, b = client.gather([a_future, b_future])
    rejoin()
    return a + b


def sum_of_incremented(n):
    """The docs' task that submits others and returns their results."""
    client = get_client()
    futures = client.map(lambda x: x + 1, range(n))
    return sum(client.gather(futures))


def children_as_they_complete(n):
    client = get_client()
    children = client.map(lambda x: x * 10, range(n), pure=False)
    return sorted(future.result() for future in as_completed(children))


def client_identity(_):
    client = get_client()
    return get_worker().address, client.id, client.scheduler_address


@pytest.mark.parametrize("fib", [fib_worker_client, fib_secede_rejoin])
def test_recursive_fibonacci_of_depth_20_finishes_on_worker_processes(cluster, client, fib):
    assert client.submit(fib, 20).result(timeout=60) == 6765


@pytest.mark.parametrize("fib", [fib_worker_client, fib_secede_rejoin])
def test_recursive_fibonacci_of_depth_20_finishes_on_in_process_workers(threads_client, fib):
    assert threads_client.submit(fib, 20).result(timeout=60) == 6765


def test_dask_gives_the_same_fibonacci(dask_client, threads_client):
    import distributed

    def dask_fib(n):
        if n < 2:
            return n
        with distributed.worker_client() as c:
            a, b = c.gather([c.submit(dask_fib, n - 1), c.submit(dask_fib, n - 2)])
        return a + b

    expected = dask_client.submit(dask_fib, 12).result(timeout=60)
    assert threads_client.submit(fib_worker_client, 12).result(timeout=60) == expected == 144


def test_a_task_submits_tasks_and_returns_their_results(client):
    assert client.submit(sum_of_incremented, 10).result(timeout=30) == 55


def test_a_task_waiting_on_its_tasks_gives_up_its_slot_meanwhile(threads_client):
    """Without an explicit secede: the wait itself secedes, so with every worker's one thread
    taken by a waiting parent, the children still run (storied differs from Dask here)."""
    parents = threads_client.map(sum_of_incremented, [5, 6])
    assert threads_client.gather(parents, errors="raise") == [15, 21]
    story = threads_client.story(parents[0].key)
    assert ("executing", "long-running") in [(e["start"], e["finish"]) for e in story]


def ask_scheduler_type(_):
    return get_client().scheduler_info()["type"]


def test_a_task_asking_the_scheduler_keeps_its_slot(threads_client):
    """Only waiting on pending futures gives the slot up: a quick call must not wait for a
    slot afterwards (behind whatever task took it)."""
    future = threads_client.submit(ask_scheduler_type, 1, pure=False)
    assert future.result(timeout=30) == "Scheduler"
    story = threads_client.story(future.key)
    assert "long-running" not in [e["finish"] for e in story]


def test_a_task_iterating_as_completed_over_its_tasks_gives_up_its_slot(threads_client):
    parents = threads_client.map(children_as_they_complete, [3, 4])
    assert threads_client.gather(parents) == [[0, 10, 20], [0, 10, 20, 30]]


def test_tasks_of_in_process_workers_get_a_blocking_client_beside_an_asynchronous_one():
    async def run():
        async with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, asynchronous=True
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            parent = client.submit(sum_of_incremented, 4)
            return await parent, (await client.submit(client_identity, 1))[1], client.id

    total, task_client_id, async_client_id = asyncio.run(run())
    assert total == 10
    assert task_client_id != async_client_id


def test_a_worker_closes_the_client_it_made_for_its_tasks():
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        worker_client_id = client.submit(client_identity, 1).result(timeout=30)[1]
        [worker] = cluster.workers.values()
        made = worker.coordination._client
        assert made is not None and made.id == worker_client_id != client.id
    assert made.status == "closed"


def test_get_client_in_tasks_of_one_worker_process_is_one_client_reused(cluster, client):
    address = next(iter(client.scheduler_info()["workers"]))
    first = client.submit(client_identity, 1, workers=[address]).result(timeout=30)
    second = client.submit(client_identity, 2, workers=[address]).result(timeout=30)
    assert first == second
    assert first[0] == address
    assert first[1] != client.id  # the worker's own client, in the worker's process
    assert first[2] == cluster.scheduler_address
    events = client.get_events("worker-get-client")
    assert [msg["client"] for _, msg in events].count(first[1]) == 1


def test_in_process_workers_use_the_client_in_charge_for_their_scheduler(threads_client):
    _, client_id, _ = threads_client.submit(client_identity, 1).result(timeout=30)
    assert client_id == threads_client.id


def test_in_process_workers_never_keep_a_client_the_user_closed(threads_cluster):
    """Each ``get_client()`` looks for the client in charge anew, so a task never gets one
    that was closed since. (dask.distributed's in-process workers keep the default client
    they found and hand it out closed: what made the corpus fail after this file.)"""
    with Client(threads_cluster) as first:
        assert first.submit(client_identity, 1).result(timeout=30)[1] == first.id
    with Client(threads_cluster, set_as_default=False) as second:
        future = second.submit(sum_of_incremented, 3, pure=False)
        assert future.result(timeout=30) == 6
        _, task_client_id, _ = second.submit(client_identity, 2).result(timeout=30)
        assert task_client_id != first.id


def test_a_seceded_task_is_on_the_record(threads_cluster, threads_client):
    future = threads_client.submit(fib_worker_client, 3)
    assert future.result(timeout=30) == 2
    story = threads_client.story(future.key)
    worker_path = [
        (entry["start"], entry["finish"]) for entry in story if entry["where"] != "scheduler"
    ]
    assert ("executing", "long-running") in worker_path
    assert ("long-running", "executing") in worker_path
    events = threads_client.get_events("worker-client")
    assert any(msg["key"] == future.key and msg["seceded"] for _, msg in events)


def test_seceded_threads_end_with_their_tasks(threads_cluster, threads_client):
    def task_threads():
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("storied-task"))

    before = task_threads()
    assert len(before) == 2  # one per worker
    assert threads_client.submit(fib_secede_rejoin, 10).result(timeout=30) == 55
    poll(lambda: len(task_threads()) == 2, what="the pool is back to one thread per worker")


def test_secede_and_rejoin_outside_a_task_raise_a_clear_error():
    with pytest.raises(ValueError, match="outside a task"):
        secede()
    with pytest.raises(ValueError, match="outside a task"):
        rejoin()


def test_worker_client_outside_a_task_raises_a_clear_error():
    with pytest.raises(ValueError, match="outside a task"), worker_client():
        pass


def default_and_task_client_ids(_):
    from storied import default_client

    return default_client().id, get_client().id


def test_in_a_worker_process_task_the_default_client_is_the_workers(client):
    default_id, task_client_id = client.submit(default_and_task_client_ids, 1).result(timeout=30)
    assert default_id == task_client_id != client.id
