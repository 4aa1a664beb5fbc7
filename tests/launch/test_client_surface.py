"""The rest of the Future/Client surface Dask users call, each as Dask does."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import traceback
import uuid

import pytest

from storied import Client, as_completed, fire_and_forget, futures_of, get_worker
from tests.engine.helpers import inc, poll


def div(x, y):
    return x / y


def slow_inc(x, seconds):
    import time

    time.sleep(seconds)
    return x + 1


def flaky(path):
    """Fails the first time it runs (the marker file does not exist yet), then succeeds."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first run fails")
    return "second run"


def log_side_effect(_, topic):
    get_worker().log_event(topic, {"ran": True})
    return None


class DuckCollection:
    """Stands in for a dask collection (no dask import needed): futures in its graph."""

    def __init__(self, graph):
        self._graph = graph

    def __dask_graph__(self):
        return self._graph


# ---------------------------------------------------------------- futures_of


def test_futures_of_finds_each_future_once_in_nested_structures_and_collections(client):
    a, b, c = client.map(inc, [1, 2, 3])
    structure = [a, (b, {"x": a, "y": {c}}), "not a future", 5]
    assert futures_of(structure) == [a, b, c]
    assert futures_of(DuckCollection({"k1": b, "k2": ("task", a)})) == [b, a]
    assert futures_of(a) == [a]
    assert futures_of([1, "x", None]) == []


def test_futures_of_real_dask_collections_as_dask_finds_them(client, dask_client):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    import distributed

    ours, theirs = client.submit(inc, 1), dask_client.submit(inc, 1)
    assert futures_of(dask.delayed(ours)) == [ours]
    assert distributed.futures_of(dask.delayed(theirs)) == [theirs]
    assert futures_of(dask.delayed(inc)(ours)) == distributed.futures_of(
        dask.delayed(inc)(theirs)
    )  # neither looks inside a task's arguments
    persisted = client.persist(da.ones(10, chunks=5) + 1)
    assert len(futures_of(persisted)) == 2
    assert len(distributed.futures_of(dask_client.persist(da.ones(10, chunks=5) + 1))) == 2


# ---------------------------------------------------------------- fire_and_forget


def test_fire_and_forget_runs_tasks_whose_futures_were_dropped(cluster, client):
    topic = f"ff-{uuid.uuid4().hex}"
    slow = client.submit(slow_inc, 1, 0.3, pure=False)
    effect = client.submit(log_side_effect, slow, topic, pure=False)
    key = effect.key
    fire_and_forget(effect)
    del slow, effect
    poll(lambda: client.get_events(topic), timeout=30, what="the forgotten task ran")
    poll(lambda: key not in cluster.scheduler.tasks, what="and then it was let go")
    fired = [msg for _, msg in client.get_events("fire-and-forget") if key in msg["keys"]]
    assert fired and fired[0]["client"] == client.id
    assert [entry[2] for entry in cluster.scheduler.story(key)][-2:] == ["released", "forgotten"]


def test_without_fire_and_forget_a_dropped_task_never_runs(cluster, client):
    """The control for the test above: the same tasks, dropped, are forgotten unrun."""
    slow = client.submit(slow_inc, 1, 0.3, pure=False)
    effect = client.submit(log_side_effect, slow, f"unused-{uuid.uuid4().hex}", pure=False)
    key = effect.key
    del slow, effect
    poll(lambda: key not in cluster.scheduler.tasks, what="the dropped task was forgotten")
    assert "processing" not in [entry[2] for entry in cluster.scheduler.story(key)]


def test_fire_and_forget_rejects_what_holds_no_futures(client):
    with pytest.raises(TypeError, match="takes futures"):
        fire_and_forget(42)
    fire_and_forget([])  # an empty collection is fine


# ---------------------------------------------------------------- as_completed


def test_as_completed_batches_update_and_count(client):
    futures = client.map(inc, range(6))
    finished = as_completed(futures[:3])
    finished.update(futures[3:])
    assert finished.count() == 6
    batches = list(finished.batches())
    assert sorted(f.key for batch in batches for f in batch) == sorted(f.key for f in futures)
    assert finished.is_empty() and finished.count() == 0


def test_as_completed_with_results_raises_errors_by_default_as_dask_does(client):
    bad = client.submit(div, 1, 0)
    with pytest.raises(ZeroDivisionError):
        list(as_completed([bad], with_results=True))
    pairs = list(as_completed([bad, client.submit(inc, 1)], with_results=True, raise_errors=False))
    by_status = {f.status: result for f, result in pairs}
    assert by_status["finished"] == 2
    kind, exc, tb = by_status["error"]
    assert kind is ZeroDivisionError and isinstance(exc, ZeroDivisionError)
    assert "div" in "".join(traceback.format_tb(tb))


def test_dask_as_completed_raises_the_same_way(dask_client):
    import distributed

    bad = dask_client.submit(div, 1, 0)
    with dask_client.as_current():  # Dask's as_completed looks for a client in charge
        with pytest.raises(ZeroDivisionError):
            list(distributed.as_completed([bad], with_results=True))
        [(_, result)] = distributed.as_completed([bad], with_results=True, raise_errors=False)
    assert result[0] is ZeroDivisionError


def test_as_completed_next_batch_without_blocking_and_timeout(client):
    pending = client.submit(slow_inc, 1, 2.0, pure=False)
    finished = as_completed([pending], timeout=0.2)
    assert finished.next_batch(block=False) == []
    with pytest.raises(TimeoutError):
        next(finished)
    client.cancel(pending)


def test_as_completed_with_an_asynchronous_client(cluster):
    async def run():
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(inc, range(3))
            results = [result async for _, result in as_completed(futures, with_results=True)]
            bad = client.submit(div, 1, 0)
            with pytest.raises(ZeroDivisionError):
                async for _ in as_completed([bad], with_results=True):
                    pass
            return sorted(results)

    assert asyncio.run(run()) == [1, 2, 3]


# ---------------------------------------------------------------- scatter


def test_scatter_without_hash_gives_random_keys(client):
    hashed = [client.scatter(7), client.scatter(7)]
    assert hashed[0].key == hashed[1].key
    fresh = [client.scatter(7, hash=False), client.scatter(7, hash=False)]
    assert fresh[0].key != fresh[1].key
    assert all(f.key.startswith("int-") for f in fresh)
    assert client.gather(fresh) == [7, 7]
    assert len({f.key for f in client.scatter([1, 1], hash=False)}) == 2


# ---------------------------------------------------------------- retry, recreate


def test_retry_runs_a_failed_future_and_its_failed_inputs_again(client, tmp_path):
    marker = str(tmp_path / "flaky")
    first = client.submit(flaky, marker, pure=False)
    dependent = client.submit(lambda s: s.upper(), first, pure=False)
    with pytest.raises(RuntimeError, match="first run fails"):
        dependent.result(timeout=30)
    client.retry([dependent])
    assert dependent.result(timeout=30) == "SECOND RUN"
    assert first.result(timeout=30) == "second run"
    retries = [msg for _, msg in client.get_events(client.id) if msg.get("action") == "retry"]
    assert retries and set(retries[-1]["keys"]) == {first.key, dependent.key}


def test_retry_of_a_finished_future_changes_nothing(client):
    done = client.submit(inc, 5)
    assert done.result(timeout=30) == 6
    done.retry()
    assert done.result(timeout=30) == 6


def test_recreate_error_locally_runs_the_blamed_task_here(client):
    source = client.submit(inc, 1)
    bad = client.submit(div, source, 0)
    downstream = client.submit(inc, bad)
    with pytest.raises(ZeroDivisionError) as raised:
        client.recreate_error_locally(downstream)
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert frames[-1] == "div"  # raised by a local run of div(2, 0), not rebuilt from afar
    with pytest.raises(ValueError, match="No errored futures"):
        client.recreate_error_locally(source)


# ---------------------------------------------------------------- executor, sync


def test_get_executor_is_a_concurrent_futures_executor(client):
    with client.get_executor(pure=False) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        futures = [executor.submit(inc, i) for i in range(4)]
        done, _ = concurrent.futures.wait(futures, timeout=30)
        assert len(done) == 4
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [1, 2, 3, 4]
        assert list(executor.map(inc, [10, 20], timeout=30)) == [11, 21]
        failed = executor.submit(div, 1, 0)
        assert isinstance(failed.exception(timeout=30), ZeroDivisionError)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(inc, 1)
    with pytest.raises(TypeError, match="unsupported arguments"):
        client.get_executor(key="fixed")
    with client.get_executor(retries=1, workers=list(client.scheduler_info()["workers"])) as ex:
        assert ex.submit(inc, 1).result(timeout=30) == 2


def test_sync_runs_a_coroutine_function_on_the_clients_loop(client):
    async def loop_of(x):
        await asyncio.sleep(0)
        return asyncio.get_running_loop(), x * 2

    loop, doubled = client.sync(loop_of, 21)
    assert doubled == 42 and loop is client._loop
    with pytest.raises(TimeoutError):
        client.sync(asyncio.sleep, 5, callback_timeout=0.05)
