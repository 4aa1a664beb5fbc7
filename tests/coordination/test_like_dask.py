"""The same script on storied and on dask.distributed gives the same answers; and bad input
gets a clear error at the caller, never a broken scheduler."""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest

import storied
from storied import Client, LocalCluster, Lock, Queue, Semaphore, Variable
from tests.coordination.helpers import Counter
from tests.engine.helpers import poll


def error_name(call: Any) -> str | None:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None


def scenario(lib: types.ModuleType, client: Any) -> dict[str, Any]:
    """Dask's documented uses of each primitive, written once against ``lib``."""
    seen: dict[str, Any] = {}
    v = lib.Variable("v")
    v.set(1)
    seen["variable"] = v.get()
    seen["variable unset"] = error_name(lambda: lib.Variable("unset").get(timeout=0.05))
    future = client.submit(lambda: 10)
    v.set(future)
    seen["variable future"] = v.get().result()

    q = lib.Queue("q")
    for i in range(4):
        q.put(i)
    seen["qsize"] = q.qsize()
    seen["queue"] = [q.get(), q.get(batch=2), q.get(batch=True), q.get(batch=True)]
    seen["queue empty"] = error_name(lambda: q.get(timeout=0.05))

    lock = lib.Lock("l")
    seen["lock"] = [lock.acquire(), lock.locked(), lib.Lock("l").acquire(blocking=False)]
    lock.release()
    seen["lock released"] = lock.locked()
    seen["lock over-released"] = error_name(lock.release)

    sem = lib.Semaphore(max_leases=2, name="s")
    seen["semaphore"] = [sem.acquire(), sem.acquire(), sem.get_value(), sem.acquire(timeout=0.05)]
    sem.release()
    sem.release()
    seen["semaphore after"] = sem.get_value()

    e = lib.Event("e")
    seen["event"] = [e.is_set(), e.wait(0.05)]
    e.set()
    seen["event set"] = [e.is_set(), e.wait(0.05)]

    client.publish_dataset(d=future)
    client.publish_dataset(future, name="e")
    seen["datasets"] = sorted(client.list_datasets())
    seen["dataset"] = client.get_dataset("d").result()
    seen["dataset taken"] = error_name(lambda: client.publish_dataset(d=1))
    seen["dataset missing"] = error_name(lambda: client.get_dataset("zz"))
    seen["dataset default"] = client.get_dataset("zz", default="dflt")
    seen["datasets mapping"] = ["d" in client.datasets, len(client.datasets)]
    client.unpublish_dataset("d")
    del client.datasets["e"]
    seen["datasets left"] = list(client.datasets)

    counter = client.submit(Counter, actor=True)
    proxy = counter.result()
    seen["actor"] = [proxy.increment().result(), proxy.increment().result(), proxy.n]
    seen["actor repr"] = repr(proxy).split(",")[0]
    return seen


def test_same_answers_as_dask() -> None:
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as dask_cluster,
        distributed.Client(dask_cluster) as dask_client,
    ):
        dask_seen = scenario(distributed, dask_client)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        Client(cluster) as client,
    ):
        storied_seen = scenario(storied, client)
    assert storied_seen == dask_seen


@pytest.fixture(scope="module")
def client() -> Any:
    with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as connected:
        yield connected


def test_bad_input_is_refused_at_the_caller(client: Client) -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        Variable(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_leases"):
        Semaphore(max_leases=0)
    with pytest.raises(ValueError, match="maxsize"):
        Queue(maxsize=-1)
    with pytest.raises(ValueError, match="batch"):
        Queue("q").get(batch="all")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="could not serialize"):
        Variable("v").set(_Unpicklable())
    with pytest.raises(TypeError, match="could not serialize"):
        Queue("q").put([1, _Unpicklable()])
    with pytest.raises(ValueError, match="If name is provided"):
        client.publish_dataset(name="x")
    with pytest.raises(TypeError, match="needs a class"):
        client.submit(len, actor=True)
    with pytest.raises(ValueError, match="can't specify a timeout"):
        Lock("x").acquire(blocking=False, timeout=1)


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not today")


def test_a_released_future_cannot_be_stored(client: Client) -> None:
    future = client.submit(lambda: 1, key="gone-soon")
    future.result()
    del future
    poll(
        lambda: (
            not client.run_on_scheduler(lambda dask_scheduler: "gone-soon" in dask_scheduler.tasks)
        )
    )
    stale = storied.Future("gone-soon", client)
    with pytest.raises(ValueError, match="unknown to the scheduler"):
        Variable("v").set(stale)
    assert client.submit(lambda: 2).result() == 2


def test_asynchronous_client() -> None:
    async def main() -> list[Any]:
        async with (
            LocalCluster(n_workers=1, processes=False, asynchronous=True) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            v = Variable("a", client=client)
            await v.set(5)
            lock = Lock("a", client=client)
            async with lock:
                locked = await lock.locked()
            q = Queue("a", client=client)
            await q.put("x")
            counter = await client.submit(Counter, actor=True)
            return [await v.get(), locked, await q.get(), await counter.increment()]

    assert asyncio.run(main()) == [5, True, "x", 1]
