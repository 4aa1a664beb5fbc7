"""MultiLock: the scheduler's queues driven directly, then on a cluster (mutual exclusion
between tasks, the record, a leaving holder, bad arguments), and beside dask.distributed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from storied import Client, LocalCluster, MultiLock
from storied.coordination.multilock import MultiLockState
from tests.coordination.test_examples import events


def request(state: MultiLockState, request_id: str, names: list[str], num_locks: int = 0) -> bool:
    return state.request(request_id, names, num_locks or len(names), "client", None, None, 0.0)


def test_a_request_waits_for_every_lock_and_is_granted_when_they_come_free() -> None:
    state = MultiLockState()
    assert request(state, "first", ["a", "b"])
    assert not request(state, "second", ["b", "c"])
    assert not request(state, "third", ["a"])
    assert not state.granted("second") and not state.granted("third")
    released, granted = state.withdraw("first", 1.0)
    assert released is not None and released.granted == 0.0
    assert sorted(granted) == ["second", "third"]
    assert state.requests["second"].granted == 1.0
    assert state.queues == {"b": ["second"], "c": ["second"], "a": ["third"]}


def test_num_locks_takes_the_free_ones_first_and_queues_for_no_more() -> None:
    state = MultiLockState()
    assert request(state, "holder", ["a"])
    assert request(state, "some", ["a", "b"], num_locks=1)
    assert state.requests["some"].names == {"b"}
    assert state.queues == {"a": ["holder"], "b": ["some"]}


def test_a_withdrawn_waiter_leaves_every_queue() -> None:
    state = MultiLockState()
    assert request(state, "holder", ["a"])
    assert not request(state, "waiter", ["a", "b"])
    released, granted = state.withdraw("waiter", 1.0)
    assert released is not None and released.granted is None and granted == []
    assert state.queues == {"a": ["holder"]}
    assert state.withdraw("waiter", 2.0) == (None, [])
    state.withdraw("holder", 3.0)
    assert state.queues == {} and state.requests == {}


def test_bad_requests_are_refused_and_requests_are_found_by_holder() -> None:
    state = MultiLockState()
    with pytest.raises(ValueError, match="num_locks"):
        request(state, "too-many", ["a", "b"], num_locks=3)
    with pytest.raises(ValueError, match="num_locks"):
        request(state, "none", [])
    assert state.request("mine", ["a"], 1, "c1", "tcp://w:1", "task-1", 0.0)
    assert not state.request("other", ["a"], 1, "c2", None, None, 0.0)
    with pytest.raises(ValueError, match="already queued"):
        state.request("mine", ["z"], 1, "c1", None, None, 0.0)
    assert state.requests_of(client="c1") == ["mine"]
    assert state.requests_of(worker="tcp://w:1") == ["mine"]
    assert state.requests_of(client="c3") == []


def hold_both_and_note(path: str, i: int) -> int:
    """Appends its start and end under the lock: overlapping spans would show a failed lock."""
    with MultiLock(names=["ml-file", "ml-other"]):
        with open(path, "a") as log:
            log.write(f"start {i}\n")
        time.sleep(0.01)
        with open(path, "a") as log:
            log.write(f"end {i}\n")
    return i


def test_tasks_taking_the_same_locks_never_overlap_and_the_record_says_who(
    client: Client, tmp_path: Any
) -> None:
    path = str(tmp_path / "spans")
    assert sorted(client.gather(client.map(hold_both_and_note, [path] * 6, range(6)))) == list(
        range(6)
    )
    with open(path) as log:
        lines = log.read().split()
    pairs = list(zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4], strict=True))
    assert all(s == "start" and e == "end" and i == j for s, i, e, j in pairs)
    acquired = events(client, "multilock", action="acquire", name="ml-file,ml-other")
    released = events(client, "multilock", action="release", name="ml-file,ml-other")
    assert len(acquired) >= 6 and len(released) >= 6
    assert all(msg["task"] and msg["worker"] for msg in acquired)


def test_locks_held_by_a_client_that_leaves_are_freed(cluster: LocalCluster) -> None:
    with Client(cluster) as leaving:
        assert MultiLock(["ml-left-a", "ml-left-b"], client=leaving).acquire()
        leaver = leaving.id
    with Client(cluster) as staying:
        assert MultiLock(["ml-left-b"], client=staying).acquire(timeout=10)
        (freed,) = events(staying, "multilock", action="release", name="ml-left-a,ml-left-b")
        assert freed["reason"] == "client left" and freed["client"] == leaver


def test_a_timed_out_request_gives_up_its_place_and_bad_calls_are_refused(
    client: Client,
) -> None:
    holder = MultiLock(["ml-busy"])
    assert holder.acquire()
    assert MultiLock(["ml-busy", "ml-free"]).acquire(timeout=0.05) is False
    free = MultiLock(["ml-free"])
    assert free.acquire(blocking=False)  # the waiter left ml-free's queue
    free.release()
    assert events(client, "multilock", action="acquire-timeout", name="ml-busy,ml-free")
    with pytest.raises(RuntimeError, match="already acquired"):
        holder.acquire()
    holder.release()
    with pytest.raises(ValueError, match="not yet acquired"):
        holder.release()
    with pytest.raises(ValueError, match="non-blocking"):
        holder.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="num_locks"):
        MultiLock(["ml-x"]).acquire(num_locks=2)
    with pytest.raises(TypeError, match="strs"):
        MultiLock([1, 2])  # type: ignore[list-item]


def multilock_steps(multilock_class: Any) -> list[object]:
    """The same steps on storied and on Dask."""
    first = multilock_class(names=["ml-cmp-a"])
    seen: list[object] = [first.acquire(), first.locked()]
    some = multilock_class(names=["ml-cmp-a", "ml-cmp-b"])
    seen.append(some.acquire(num_locks=1, timeout=1))
    seen.append(multilock_class(names=["ml-cmp-b"]).acquire(timeout=0.05))
    some.release()
    first.release()
    both = multilock_class(names=["ml-cmp-a", "ml-cmp-b"])
    seen += [first.locked(), both.acquire(timeout=1)]
    both.release()
    return seen


def test_multilock_answers_as_dask_does(client: Client, dask_client: Any) -> None:
    import distributed

    with dask_client.as_current():
        theirs = multilock_steps(distributed.MultiLock)
    assert multilock_steps(MultiLock) == theirs == [True, True, True, False, False, True]
