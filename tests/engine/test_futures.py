"""submit, map, Futures and the collection helpers over real TCP (issue 2, points 3 to 6)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from typing import NamedTuple

import pytest

from storied import CancelledError, Client, Future, as_completed, get_worker, wait

from .helpers import add, fail, inc, key_pattern, poll, total


def count_run(x: int, counter: str) -> int:
    """``inc`` that counts its runs on the worker object, readable later with ``client.run``."""
    worker = get_worker()
    setattr(worker, counter, getattr(worker, counter, 0) + 1)
    return x + 1


def runs(client: Client, counter: str) -> int:
    return sum(client.run(lambda dask_worker: getattr(dask_worker, counter, 0)).values())


def never_runs(client: Client, x: object = None) -> Future:
    """A future that stays pending: no worker has this name."""
    return client.submit(inc, x, workers=["no-such-worker"], pure=False)


def test_keys_are_function_name_and_a_hash_of_the_call(client):
    first, second, other = client.submit(inc, 1), client.submit(inc, 1), client.submit(inc, 2)
    assert key_pattern("inc").fullmatch(first.key)
    assert first.key == second.key
    assert other.key != first.key
    assert client.submit(add, 1, y=2).key != client.submit(add, 2, y=1).key
    mapped = client.map(inc, [1, 2, 1])
    assert mapped[0].key == first.key and mapped[2].key == first.key
    assert mapped[1].key == other.key


def test_lambdas_are_named_lambda(client):
    future = client.submit(lambda x: x * 2, 21)
    assert key_pattern("lambda").fullmatch(future.key)
    assert future.result(timeout=10) == 42


def test_impure_calls_get_random_keys_and_all_run(client):
    counter = f"runs_{uuid.uuid4().hex}"
    futures = [client.submit(count_run, 1, counter, pure=False) for _ in range(3)]
    assert len({f.key for f in futures}) == 3
    assert all(key_pattern("count_run").fullmatch(f.key) for f in futures)
    assert client.gather(futures) == [2, 2, 2]
    assert runs(client, counter) == 3


def test_the_same_pure_call_runs_once(client):
    counter = f"runs_{uuid.uuid4().hex}"
    first = client.submit(count_run, 1, counter)
    second = client.submit(count_run, 1, counter)
    assert first.result(timeout=10) == second.result(timeout=10) == 2
    third = client.submit(count_run, 1, counter)
    mapped = client.map(count_run, [1, 1], [counter, counter])
    assert client.gather([third, *mapped]) == [2, 2, 2]
    assert runs(client, counter) == 1


def test_key_overrides(client):
    name = f"mine-{uuid.uuid4().hex}"
    assert client.submit(inc, 1, key=name).key == name
    assert client.submit(inc, 1, key=name).result(timeout=10) == 2
    prefixed = client.map(inc, [1, 2], key="step")
    assert all(key_pattern("step").fullmatch(f.key) for f in prefixed)
    named = client.map(inc, [1, 2], key=[f"{name}-a", f"{name}-b"])
    assert [f.key for f in named] == [f"{name}-a", f"{name}-b"]
    assert client.gather(named) == [2, 3]


def test_map_over_several_iterables_with_keywords(client):
    assert client.gather(client.map(add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert client.gather(client.map(add, [1, 2], y=100)) == [101, 102]


def test_futures_nested_in_arguments_become_their_values(client):
    a, b, c = client.map(inc, [10, 20, 30])
    nested = client.submit(total, [a, (b, {"c": c, "plain": 1})])
    assert nested.result(timeout=10) == 11 + 21 + 31 + 1
    chained = client.submit(add, a, y=client.submit(inc, b))
    assert chained.result(timeout=10) == 11 + 22


def test_inputs_travel_between_workers_directly(cluster, client):
    first, second = client.scheduler_info()["workers"]
    x = client.submit(inc, 1, workers=[first], pure=False)
    y = client.submit(inc, x, workers=[second], pure=False)
    assert y.result(timeout=10) == 3
    on_second = [
        (e["start"], e["finish"])
        for e in client.story(x.key)
        if e["key"] == x.key and e["where"] == second
    ]
    assert ("fetch", "flight") in on_second
    assert ("flight", "memory") in on_second
    assert not any(
        e["where"] == second and e["finish"] == "executing" for e in client.story(x.key)
    ), "x ran only on the first worker"


def test_cancelling_a_finished_future_lets_its_result_go_as_in_dask(client):
    future = client.submit(inc, 7000)
    assert future.result(timeout=10) == 7001
    client.cancel([future])
    assert future.status == "cancelled" and future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    erred = client.submit(fail, "cancel me")
    wait([erred], timeout=10)
    erred.cancel()
    assert erred.status == "cancelled"
    future.release()  # while a Future of the key lives, a new one shares its state, as in Dask
    again = client.submit(inc, 7000)
    assert again.result(timeout=10) == 7001 and again.status == "finished"


def test_client_futures_of_finds_futures_and_refuses_cancelled_ones(client):
    first, second = client.submit(inc, 8000), client.submit(inc, 8001)
    found = client.futures_of({"a": [first], "b": ({second}, 1)})
    assert {f.key for f in found} == {first.key, second.key}
    second.cancel()
    with pytest.raises(CancelledError, match=second.key):
        client.futures_of([first, second])


def test_a_result_arriving_after_cancel_leaves_the_future_cancelled(client):
    """The scheduler may report a key in memory just before it hears of the cancel (the CI
    failure of the futures_of test above): the future stays cancelled, as in Dask."""
    future = client.submit(inc, 8100)
    future.cancel()
    handlers = client._stream_handlers()
    client._sync(_deliver_late, handlers["key-in-memory"], future.key)
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=5)
    again = client.submit(inc, 8100)  # the same key, submitted afresh
    assert again.result(timeout=10) == 8101 and not again.cancelled()


async def _deliver_late(key_in_memory, key):
    key_in_memory(key, "builtins.int", [])


def test_scatter_and_gather_take_dasks_direct_flag(client):
    [future] = client.scatter([[1, 2]], direct=True)
    assert client.gather([future], direct=True) == [[1, 2]]
    assert client.gather(future, direct=False) == [1, 2]


def test_gather_asynchronous_on_a_blocking_client_inside_client_sync(client):
    """Dask's asynchronous.rst example: a coroutine run by client.sync awaits gather."""

    async def add_one_remotely() -> int:
        future = client.submit(inc, 10)
        return await client.gather(future, asynchronous=True)

    assert client.sync(add_one_remotely) == 11


class Point(NamedTuple):
    x: int
    y: int


class Settings(dict):
    """A dict subclass: scattered whole, as Dask does, so it keeps its type on the workers."""


def scattered_shapes(client) -> list[object]:
    """What scatter gives back for each kind of data: the same steps on storied and Dask."""
    seen: list[object] = []
    for data in (range(3), {4, 5}, frozenset({6}), Point(1, 2), (7, 8), Settings(a=1), "text"):
        futures = client.scatter(data)
        values = client.gather(futures)
        seen.append((type(futures).__name__, values, type(values).__name__))
    return seen


def test_scatter_unpacks_and_shapes_as_dask_does(client, dask_client):
    ours = scattered_shapes(client)
    assert ours == scattered_shapes(dask_client)
    assert ours[0] == ("list", [0, 1, 2], "list")
    assert ours[3] == ("Point", Point(1, 2), "Point")
    assert ours[5][0] == "Future" and ours[5][2] == "Settings"
    for system in (client, dask_client):
        with pytest.raises(TypeError, match=r"[Ii]terator"):
            system.scatter(iter([1, 2]))


class Local:
    """A class the workers can unpickle (by value) but that no module here names."""


def make_local() -> Local:
    return Local()


def test_type_is_the_result_class_or_its_name_as_in_dask(client):
    import numpy as np

    pending = never_runs(client)
    assert pending.type is None  # not known until the result is
    pending.cancel()
    numbers = client.submit(inc, 1)
    array = client.submit(np.arange, 3)
    local = client.submit(make_local)
    wait([numbers, array, local], timeout=10)
    assert numbers.type is int and array.type is np.ndarray
    assert local.type in (Local, f"{__name__}.Local")  # named by a module this process may lack


def test_reprs_match_the_seed(client):
    finished = client.submit(inc, 122)
    finished.result(timeout=10)
    assert re.fullmatch(
        r"<Future: finished, type: builtins\.int, key: inc-[0-9a-f]{32}>", repr(finished)
    )
    pending = never_runs(client)
    assert repr(pending) == f"<Future: pending, key: {pending.key}>"
    erred = client.submit(fail, "repr")
    wait([erred], timeout=10)
    assert repr(erred) == f"<Future: error, key: {erred.key}>"
    pending.cancel()


def test_future_api_on_success(client):
    future = client.submit(inc, 41)
    assert isinstance(future, Future)
    assert future.result(timeout=10) == 42
    assert future.done()
    assert future.status == "finished"
    assert future.exception(timeout=1) is None
    assert future.traceback(timeout=1) is None


def test_result_timeout_on_a_pending_future(client):
    future = never_runs(client)
    assert not future.done()
    assert future.status == "pending"
    with pytest.raises(TimeoutError):
        future.result(timeout=0.2)
    future.cancel()


def test_done_callbacks_run_whatever_the_outcome(client):
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def remember(future: Future) -> None:
        with lock:
            seen.append((future.key, future.status))

    good, bad, stuck = client.submit(inc, 7), client.submit(fail, "callback"), never_runs(client)
    for future in (good, bad, stuck):
        future.add_done_callback(remember)
    stuck.cancel()
    poll(lambda: len(seen) == 3, timeout=10)
    assert sorted(seen) == sorted(
        [(good.key, "finished"), (bad.key, "error"), (stuck.key, "cancelled")]
    )
    late: list[str] = []
    good.add_done_callback(lambda f: late.append(f.status))
    poll(lambda: late == ["finished"])


def test_cancel_a_pending_future(cluster, client):
    future = never_runs(client)
    key = future.key
    poll(lambda: key in cluster.scheduler.state.tasks)
    future.cancel()
    poll(lambda: future.status == "cancelled")
    assert future.cancelled()
    with pytest.raises(CancelledError):
        future.result(timeout=5)
    poll(lambda: key not in cluster.scheduler.state.tasks)


def test_client_cancel_takes_collections(client):
    futures = [never_runs(client, i) for i in range(3)]
    client.cancel(futures)
    poll(lambda: all(f.status == "cancelled" for f in futures))


def test_releasing_the_last_future_forgets_the_task(cluster, client):
    future = client.submit(inc, uuid.uuid4().int)
    copy = Future(future.key, client)
    future.result(timeout=10)
    key = future.key

    def held_by_workers() -> bool:
        return any(client.run(lambda dask_worker: key in dask_worker.data).values())

    assert key in cluster.scheduler.state.tasks
    assert held_by_workers()
    del future
    assert cluster.scheduler.state.tasks.get(key) is not None, "another Future still holds it"
    del copy
    poll(lambda: key not in cluster.scheduler.state.tasks, what="the scheduler forgot the task")
    poll(lambda: not held_by_workers(), what="the workers dropped the data")


def test_gather_raises_or_skips_errors(client):
    good, bad, other = client.submit(inc, 1), client.submit(fail, "gather"), client.submit(inc, 2)
    wait([good, bad, other], timeout=10)
    with pytest.raises(ZeroDivisionError):
        client.gather([good, bad, other])
    assert client.gather([good, bad, other], errors="skip") == [2, 3]
    assert client.gather({"a": good, "b": bad, "n": [other]}, errors="skip") == {"a": 2, "n": [3]}


def test_gather_keeps_the_shape_of_its_input(client):
    a, b = client.submit(inc, 1), client.submit(inc, 2)
    assert client.gather({"x": a, "y": (b, [a]), "z": 5}) == {"x": 2, "y": (3, [2]), "z": 5}
    assert client.gather(a) == 2


def test_scatter_sends_data_to_workers(client):
    single = client.scatter(10)
    assert isinstance(single, Future)
    assert client.submit(inc, single).result(timeout=10) == 11
    many = client.scatter([1, 2, 3])
    assert client.gather(many) == [1, 2, 3]
    assert client.submit(total, many).result(timeout=10) == 6
    named = client.scatter({"alpha": 5, "beta": 6})
    assert sorted(named) == ["alpha", "beta"]
    assert client.gather(named["beta"]) == 6


def test_scatter_broadcast_puts_a_copy_on_every_worker(client):
    future = client.scatter(uuid.uuid4().hex, broadcast=True)
    key = future.key
    holders = client.run(lambda dask_worker: key in dask_worker.data)
    assert len(holders) == 2 and all(holders.values())


def test_wait_all_and_first_completed(client):
    fast = client.submit(inc, 3)
    stuck = never_runs(client)
    done, not_done = wait([fast], timeout=10)
    assert done == {fast} and not not_done
    done, not_done = wait([fast, stuck], timeout=10, return_when="FIRST_COMPLETED")
    assert done == {fast} and not_done == {stuck}
    with pytest.raises(TimeoutError):
        wait([fast, stuck], timeout=0.2)
    stuck.cancel()


def test_as_completed_yields_each_future_once(client):
    futures = client.map(inc, range(8))
    assert {f.key for f in as_completed(futures)} == {f.key for f in futures}
    pairs = list(as_completed(client.map(inc, range(3)), with_results=True))
    assert sorted(result for _, result in pairs) == [1, 2, 3]


def test_run_on_every_worker_and_on_the_scheduler(cluster, client):
    pids = client.run(os.getpid)
    assert set(pids) == set(cluster.scheduler.workers)
    assert os.getpid() not in pids.values()
    [address, _] = sorted(pids)
    assert client.run(os.getpid, workers=[address]) == {address: pids[address]}
    assert client.run(lambda dask_worker: dask_worker.address) == {a: a for a in pids}

    assert client.run_on_scheduler(os.getpid) == os.getpid(), "LocalCluster's scheduler is here"
    assert (
        client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address)
        == cluster.scheduler_address
    )
    assert (
        client.run_on_scheduler(lambda x, dask_scheduler: x + len(dask_scheduler.workers), 40) == 42
    )


def test_scheduler_info_and_wait_for_workers(cluster, client):
    info = client.scheduler_info()
    assert info["address"] == cluster.scheduler_address
    assert set(info["workers"]) == set(cluster.scheduler.workers)
    assert sorted(w["name"] for w in info["workers"].values()) == ["0", "1"]
    assert {w["nthreads"] for w in info["workers"].values()} == {1}
    client.wait_for_workers(2, timeout=5)
    with pytest.raises(TimeoutError):
        client.wait_for_workers(3, timeout=0.2)


def test_asynchronous_client(cluster):
    async def main() -> None:
        async with Client(
            cluster.scheduler_address, asynchronous=True, security=cluster.security
        ) as client:
            future = client.submit(inc, 1)
            assert await future == 2
            assert await future.result() == 2
            assert await client.gather(client.map(inc, range(3))) == [1, 2, 3]
            [scattered] = await client.scatter([5])
            assert await client.submit(inc, scattered) == 6
            assert set(await client.run(os.getpid)) == set(cluster.scheduler.workers)
            assert (
                await client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.address)
                == cluster.scheduler_address
            )
            assert len((await client.scheduler_info())["workers"]) == 2
            await client.wait_for_workers(2, timeout=5)
            futures = client.map(inc, range(4), pure=False)
            done, _ = await wait(futures, timeout=10)
            assert done == set(futures)
            assert sorted([await f async for f in as_completed(futures)]) == [1, 2, 3, 4]
            with pytest.raises(ZeroDivisionError):
                await client.submit(fail, "async")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_asynchronous_client_with_its_own_cluster():
    async def main() -> None:
        async with Client(asynchronous=True, n_workers=1, processes=False) as client:
            assert await client.submit(inc, 9) == 10
            assert client.cluster.status == "running"
        assert client.cluster.status == "closed"

    asyncio.run(asyncio.wait_for(main(), 30))
