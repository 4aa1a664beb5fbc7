"""Dask's documented coordination examples, with only the import changed, on real processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from storied import (
    Client,
    Event,
    LocalCluster,
    Lock,
    Queue,
    Semaphore,
    Variable,
)
from tests.coordination.helpers import Counter, Relay
from tests.engine.helpers import poll


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes with two threads each: four tasks can run at once."""
    with LocalCluster(n_workers=2, threads_per_worker=2) as local_cluster:
        yield local_cluster


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as connected:
        yield connected


def events(client: Client, topic: str, **match: object) -> list[dict[str, object]]:
    return [
        msg
        for _, msg in client.get_events(topic)
        if all(msg.get(field) == value for field, value in match.items())
    ]


# ---------------------------------------------------------------------------- Variable


def test_variable_stop_flag_read_by_running_tasks(client: Client) -> None:
    """Dask's example: a long-running task polls a Variable until told to stop."""
    stop = Variable("stopping-criterion")
    stop.set(False)

    def long_running(var: Variable) -> int:
        rounds = 0
        while not var.get():
            rounds += 1
            time.sleep(0.01)
        return rounds

    futures = [client.submit(long_running, stop, pure=False) for _ in range(2)]

    def getters() -> set[object]:
        return {msg["task"] for msg in events(client, "variable", action="get", name=stop.name)}

    # each task has read the flag (not just four reads: one task alone made them while the
    # other's worker was still connecting its client, and that one then read True at once)
    poll(lambda: {f.key for f in futures} <= getters(), timeout=30, what="both tasks read it")
    assert not any(f.done() for f in futures)
    stop.set(True)
    rounds = client.gather(futures)
    assert all(r >= 1 for r in rounds)
    stop.delete()


def test_variable_holds_a_future_until_replaced_or_deleted(client: Client) -> None:
    x = Variable("x")
    future = client.submit(lambda: 41 + 1)
    key = future.key
    x.set(future)
    del future
    with Client(client.cluster) as other:
        got = Variable("x", client=other).get(timeout=5)
        assert got.key == key and got.result() == 42
        del got
    # only the variable wants it now; it stays
    assert client.run_on_scheduler(lambda dask_scheduler, k=key: k in dask_scheduler.tasks)
    x.set(0)
    poll(lambda: not client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks))
    assert x.get() == 0
    future = client.submit(lambda: "deleted soon")
    key = future.key
    x.set(future)
    del future
    assert client.run_on_scheduler(lambda dask_scheduler, k=key: k in dask_scheduler.tasks)
    x.delete()
    poll(lambda: not client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks))
    with pytest.raises(TimeoutError):
        x.get(timeout=0.05)


def test_variable_get_waits_for_a_set_from_a_task(client: Client) -> None:
    def set_later(var: Variable) -> None:
        time.sleep(0.2)  # the reader is waiting by then (or not: get() works either way)
        var.set({"ready": True})

    v = Variable()
    setter = client.submit(set_later, v)
    assert v.get(timeout=10) == {"ready": True}
    setter.result()
    (set_event,) = events(client, "variable", action="set", name=v.name)
    assert (
        set_event["task"] == setter.key
        and set_event["worker"] in client.scheduler_info()["workers"]
    )


# ---------------------------------------------------------------------------- Queue


def test_queue_between_tasks_carries_values_and_futures(client: Client) -> None:
    q = Queue("work")

    def produce(queue: Queue, n: int) -> int:
        for i in range(n):
            queue.put(i)
        return n

    def consume(queue: Queue, n: int) -> list[int]:
        return [queue.get(timeout=10) for _ in range(n)]

    consumer = client.submit(consume, q, 5)
    producer = client.submit(produce, q, 5)
    assert producer.result() == 5
    assert consumer.result() == [0, 1, 2, 3, 4]

    future = client.submit(lambda: "payload")
    q.put(future)
    key = future.key
    del future
    assert q.qsize() == 1
    back = q.get(timeout=5)
    assert back.key == key and back.result() == "payload"
    assert q.get(batch=True) == []
    for i in range(3):
        q.put(i)
    assert q.get(batch=2) == [0, 1]
    assert q.get(batch=True) == [2]
    with pytest.raises(TimeoutError):
        q.get(timeout=0.05)


def test_queue_maxsize_blocks_put_until_room() -> None:
    with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as client:
        q = Queue("bounded", maxsize=1)
        q.put("a")
        with pytest.raises(TimeoutError):
            q.put("b", timeout=0.05)

        def get_soon() -> None:
            time.sleep(0.1)
            Queue("bounded", client=client).get()

        thread = threading.Thread(target=get_soon)
        thread.start()
        q.put("b", timeout=10)
        thread.join()
        assert q.get() == "b"


# ---------------------------------------------------------------------------- Lock


def test_lock_protects_a_shared_resource_from_many_tasks(client: Client, tmp_path) -> None:
    """Dask's example: ``with lock:`` around a resource; here a read-modify-write counter."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    lock = Lock("counter")

    def bump(i: int, path: str, lock: Lock) -> None:
        with lock:
            with open(path) as f:
                value = int(f.read())
            time.sleep(0.005)  # widen the race a lost update needs
            with open(path, "w") as f:
                f.write(str(value + 1))

    futures = client.map(bump, range(20), path=str(counter), lock=lock)
    client.gather(futures)
    assert counter.read_text() == "20"
    assert not lock.locked()
    acquired = events(client, "lock", action="acquire", name="counter")
    released = events(client, "lock", action="release", name="counter")
    assert {msg["task"] for msg in acquired} == {f.key for f in futures}
    assert len(released) == 20 and all(msg["held"] == 0 for msg in released)


def test_lock_nonblocking_and_timeout(client: Client) -> None:
    lock = Lock("nb")
    assert lock.acquire()
    assert lock.locked()
    other = Lock("nb")
    assert other.acquire(blocking=False) is False
    start = time.monotonic()
    assert other.acquire(timeout=0.2) is False
    assert time.monotonic() - start >= 0.2
    with pytest.raises(ValueError, match="timeout"):
        other.acquire(blocking=False, timeout=1)
    lock.release()
    assert other.acquire(timeout=5)
    other.release()
    with pytest.raises(RuntimeError, match="released too often"):
        other.release()
    (timed_out, *_) = events(client, "lock", action="acquire-timeout", name="nb")
    assert timed_out["client"] == client.id


# ---------------------------------------------------------------------------- Semaphore


def test_semaphore_limits_concurrent_tasks(client: Client, tmp_path) -> None:
    """Dask's example: ``Semaphore(max_leases=2, name="database")`` around a resource; the
    tasks write when they hold it, and at most two intervals ever overlap."""
    sem = Semaphore(max_leases=2, name="database")

    def access_limited(val: int, sem: Semaphore, log: str) -> int:
        with sem:
            start = time.time()
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"{start} {time.time()}\n")
        return val

    log = str(tmp_path / "intervals")
    futures = client.map(access_limited, range(10), sem=sem, log=log)
    assert client.gather(futures) == list(range(10))
    with open(log) as f:
        intervals = [tuple(map(float, line.split())) for line in f]
    edges = sorted([(start, 1) for start, _ in intervals] + [(stop, -1) for _, stop in intervals])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    assert peak == 2
    assert sem.get_value() == 0
    holders = events(client, "semaphore", action="acquire", name="database")
    assert len(holders) == 10 and all(msg["held"] <= 2 for msg in holders)
    sem.close()
    assert events(client, "semaphore", action="close", name="database")


def test_semaphore_refuses_a_different_max_leases(client: Client) -> None:
    Semaphore(max_leases=2, name="fixed").acquire()
    with pytest.raises(ValueError, match="max_leases=2"):
        Semaphore(max_leases=3, name="fixed").acquire()
    # the scheduler is fine
    assert client.submit(lambda: 1).result() == 1


def test_semaphore_lease_freed_when_its_worker_process_dies(tmp_path) -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        sem = Semaphore(max_leases=1, name="doomed")

        def hold_forever(sem: Semaphore, flag: str) -> None:
            sem.acquire()
            open(flag, "w").close()
            time.sleep(600)

        flag = str(tmp_path / "held")
        holder = client.submit(hold_forever, sem, flag)
        poll(lambda: os.path.exists(flag), timeout=30)
        assert not Semaphore(max_leases=1, name="doomed").acquire(timeout=0.1)
        (process,) = cluster.workers.values()
        pid = process.pid
        os.kill(pid, 9)
        mine = Semaphore(max_leases=1, name="doomed")
        assert mine.acquire(timeout=20)
        (freed,) = events(client, "semaphore", action="release", name="doomed")
        assert freed["reason"] == "worker removed" and freed["task"] == holder.key
        mine.release()
        del holder


def test_semaphore_lease_times_out_without_refresh() -> None:
    from storied import config

    settings = {
        "coordination.lease-timeout": "0.3s",
        "coordination.lease-validation-interval": "0.05s",
    }

    def freeze(client: Client, sem: Semaphore) -> None:
        """The holder stops refreshing, as one stuck in a long GIL-holding call would."""
        assert sem.acquire()
        client._loop.call_soon_threadsafe(sem._refresher.cancel)

    with (
        config.set(settings),
        LocalCluster(n_workers=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        fresh = Semaphore(name="fresh")
        assert fresh.acquire()
        for name in ("stale", "staler"):  # one after the other: two lease timeouts pass
            freeze(client, Semaphore(name=name))
            assert Semaphore(name=name).acquire(timeout=10)
            (expired,) = events(client, "semaphore", action="release", name=name)
            assert expired["reason"] == "not refreshed for 0.3s"
        assert fresh.get_value() == 1  # refreshed all along: still held
        assert not events(client, "semaphore", action="release", name="fresh")


# ---------------------------------------------------------------------------- Event


def test_event_wakes_waiting_tasks(client: Client) -> None:
    go = Event("go")

    def wait_for_go(event: Event) -> bool:
        return event.wait(timeout=30)

    futures = [client.submit(wait_for_go, go, pure=False) for _ in range(3)]
    assert go.wait(timeout=0.05) is False
    go.set()
    assert client.gather(futures) == [True, True, True]
    assert go.is_set()
    go.clear()
    assert not go.is_set()
    waits = events(client, "event", action="wait", name="go")
    assert {msg["task"] for msg in waits} == {f.key for f in futures}


# ---------------------------------------------------------------------------- datasets


def test_published_dataset_outlives_its_client(cluster: LocalCluster) -> None:
    with Client(cluster) as first:
        future = first.submit(lambda: [1, 2, 3])
        first.publish_dataset(future, name="numbers")
        first.datasets["plain"] = {"a": 1}
        with pytest.raises(KeyError, match="already exists"):
            first.publish_dataset(numbers=future)
    with Client(cluster) as second:
        assert second.list_datasets() == ["numbers", "plain"]
        assert "numbers" in second.datasets and len(second.datasets) == 2
        assert second.get_dataset("numbers").result() == [1, 2, 3]
        assert second.datasets["plain"] == {"a": 1}
        with pytest.raises(KeyError, match="not found"):
            second.get_dataset("nothing")
        assert second.get_dataset("nothing", default=None) is None
        del second.datasets["plain"]
        second.unpublish_dataset("numbers")
        assert list(second.datasets) == []
        publishers = events(second, "dataset", action="publish")
        assert {msg["name"] for msg in publishers} >= {"numbers", "plain"}


# ---------------------------------------------------------------------------- actors


def test_counter_actor_example(client: Client) -> None:
    future = client.submit(Counter, actor=True)
    counter = future.result()
    assert repr(counter).startswith("<Actor: Counter, key=Counter-")
    increment = counter.increment()
    assert increment.result() == 1
    assert counter.n == 1
    assert counter.add(10).result() == 11
    assert counter.where().result() in client.scheduler_info()["workers"]

    def use_from_task(counter: object) -> int:
        return counter.increment().result()

    assert sorted(client.gather(client.map(use_from_task, [future] * 3, pure=False))) == [
        12,
        13,
        14,
    ]
    assert counter.n == 14
    key = future.key
    poll(lambda: len(events(client, "actor", key=key, action="call")) == 6)
    calls = events(client, "actor", key=key, action="call")
    assert {msg["method"] for msg in calls} == {"increment", "add", "where"}
    assert sum(1 for msg in calls if msg["task"] is not None) == 3
    del future, counter, increment
    poll(lambda: events(client, "actor", key=key, action="release"), timeout=10)


def test_one_caller_s_actor_calls_run_in_the_order_made(client: Client) -> None:
    """Calls made without waiting used to race over separate pooled connections (the corpus'
    actor-counter snippet saw [2, 1, 3] now and then)."""
    counter = client.submit(Counter, actor=True).result()
    calls = [counter.increment() for _ in range(30)]
    assert [call.result() for call in calls] == list(range(1, 31))


def test_actor_errors_reach_the_caller(client: Client) -> None:
    class Fragile:
        def fail(self) -> None:
            raise ZeroDivisionError("by design")

    fragile = client.submit(Fragile, actor=True).result()
    with pytest.raises(ZeroDivisionError, match="by design"):
        fragile.fail().result()
    with pytest.raises(TypeError, match="needs a class"):
        client.submit(len, actor=True)


def test_actor_lives_as_long_as_its_handle(client: Client) -> None:
    counter = client.submit(Counter, actor=True).result()  # the future is dropped at once
    key = counter.key

    def use_from_task(counter: object) -> int:
        return counter.increment().result()

    assert counter.increment().result() == 1
    assert client.submit(use_from_task, counter).result() == 2
    assert not events(client, "actor", key=key, action="release")
    del counter
    poll(lambda: events(client, "actor", key=key, action="release"), timeout=10)


def test_lock_held_by_a_client_that_leaves_is_freed(cluster: LocalCluster) -> None:
    with Client(cluster) as leaving:
        assert Lock("left", client=leaving).acquire()
        leaver = leaving.id
    with Client(cluster) as staying:
        assert Lock("left", client=staying).acquire(timeout=10)
        (freed,) = events(staying, "lock", action="release", name="left")
        assert freed["reason"] == "client left" and freed["client"] == leaver


def test_an_actor_calls_another_on_its_own_worker(client: Client) -> None:
    (address, *_) = client.scheduler_info()["workers"]
    counter = client.submit(Counter, actor=True, workers=[address]).result()
    relay = client.submit(Relay, actor=True, workers=[address]).result()
    assert relay.bump(counter).result(timeout=20) == 2
    assert counter.n == 1
    poll(lambda: events(client, "actor", key=counter.key, action="attribute", task=None))
