"""The scheduler-side state of each primitive, driven directly: no sockets, no cluster."""

from __future__ import annotations

import asyncio

import pytest

from storied.coordination.datasets import DatasetsState
from storied.coordination.event import EventState
from storied.coordination.extension import Waiters
from storied.coordination.holds import KeyHolds
from storied.coordination.queue import QueueState
from storied.coordination.semaphore import SemaphoreState
from storied.coordination.variable import VariableState


def packed(*keys: str) -> dict[str, object]:
    return {"payload": b"...", "keys": list(keys)}


def test_holds_count_per_holder_and_report_only_first_and_last() -> None:
    holds = KeyHolds()
    assert holds.hold("queue-q", ["a", "a", "b"]) == ["a", "b"]
    assert holds.hold("queue-q", ["a"]) == []
    assert holds.held("queue-q") == {"a": 3, "b": 1}
    assert holds.release("queue-q", ["a", "b"]) == ["b"]
    assert holds.release("queue-q", ["a"]) == []
    assert holds.release("queue-q", ["a"]) == ["a"]
    assert holds.held("queue-q") == {}
    assert holds.release("queue-q", ["a"]) == []
    assert holds.release("nobody", ["a"]) == []


def test_semaphore_grants_up_to_max_leases_and_an_id_twice_is_one_lease() -> None:
    sem = SemaphoreState("db", 2)
    assert sem.try_acquire("l1", "c1", None, None, now=0.0)
    assert sem.try_acquire("l1", "c1", None, None, now=0.0)  # a retried request
    assert sem.try_acquire("l2", "c2", "tcp://w", "task-1", now=0.0)
    assert not sem.try_acquire("l3", "c3", None, None, now=0.0)
    lease = sem.release("l2")
    assert lease is not None and (lease.client, lease.worker, lease.task) == (
        "c2",
        "tcp://w",
        "task-1",
    )
    assert sem.release("l2") is None
    assert sem.try_acquire("l3", "c3", None, None, now=1.0)


def test_semaphore_refuses_a_different_max_leases() -> None:
    sem = SemaphoreState("db", 2)
    sem.check_max_leases(2)
    with pytest.raises(ValueError, match="max_leases=2"):
        sem.check_max_leases(3)


def test_semaphore_expires_leases_not_refreshed_in_time() -> None:
    sem = SemaphoreState("db", 3)
    sem.try_acquire("old", "c1", None, None, now=0.0)
    sem.try_acquire("fresh", "c2", None, None, now=0.0)
    assert sem.refresh(["fresh", "gone"], now=8.0) == ["gone"]
    expired = sem.expire(now=12.0, timeout=10.0)
    assert [lease.lease_id for lease in expired] == ["old"]
    assert list(sem.leases) == ["fresh"]


def test_semaphore_frees_what_a_departed_client_or_worker_held() -> None:
    sem = SemaphoreState("db", 4)
    sem.try_acquire("a", "c1", None, None, now=0.0)
    sem.try_acquire("b", "c2", "tcp://w1", "t1", now=0.0)
    sem.try_acquire("c", "c2", "tcp://w2", "t2", now=0.0)
    assert [lease.lease_id for lease in sem.release_held_by(worker="tcp://w1")] == ["b"]
    assert [lease.lease_id for lease in sem.release_held_by(client="c1")] == ["a"]
    assert list(sem.leases) == ["c"]


def test_queue_is_fifo_and_respects_maxsize() -> None:
    queue = QueueState("q", maxsize=2)
    assert queue.get() is None
    assert queue.put(packed("a")) and queue.put(packed())
    assert queue.full() and not queue.put(packed("c"))
    assert queue.get() == packed("a")
    assert queue.get_all() == [packed()]
    assert queue.get_all() == []
    unbounded = QueueState("u")
    assert all(unbounded.put(packed()) for _ in range(1000))


def test_variable_replacing_returns_the_keys_let_go() -> None:
    variables = VariableState()
    assert variables.get("x") is None
    assert variables.set("x", packed("a")) == []
    assert variables.set("x", packed("b")) == ["a"]
    assert variables.get("x") == packed("b")
    assert variables.delete("x") == ["b"]
    assert variables.delete("x") is None


def test_datasets_refuse_a_taken_name_unless_overriding() -> None:
    datasets = DatasetsState()
    datasets.check_new(["x"], override=False)
    assert datasets.publish("x", packed("a")) == []
    with pytest.raises(KeyError, match="already exists"):
        datasets.check_new(["y", "x"], override=False)
    datasets.check_new(["x"], override=True)
    assert datasets.publish("x", packed("b")) == ["a"]
    assert datasets.names() == ["x"]
    assert datasets.unpublish("x") == ["b"]
    assert datasets.unpublish("x") is None


def test_event_is_clear_until_set() -> None:
    events = EventState()
    assert not events.is_set("e")
    events.set("e")
    assert events.is_set("e")
    events.clear("e")
    assert not events.is_set("e")


def test_waiters_wake_on_notify_and_give_up_at_the_timeout() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        waiters = Waiters()
        flag = {"ready": False}
        waiting = asyncio.ensure_future(waiters.until("x", lambda: flag["ready"], None))
        await asyncio.sleep(0)
        assert not waiting.done()
        waiters.notify("x")  # woken, checks again, still not ready
        await asyncio.sleep(0)
        assert not waiting.done()
        flag["ready"] = True
        waiters.notify("x")
        woke = await asyncio.wait_for(waiting, 5)
        timed_out = await waiters.until("y", lambda: False, 0.01)
        assert not waiters._waiting  # the one that gave up is not kept
        at_once = await waiters.until("z", lambda: True, 0)
        return woke, timed_out, at_once

    assert asyncio.run(scenario()) == (True, False, True)
