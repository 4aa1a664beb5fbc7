"""What the record says of workers: names, removals and transfers, from events and stories."""

from __future__ import annotations

from storied.record.events import EventRecord
from storied.record.transitions import TransitionRecord
from storied.record.workers import transfers, with_names, worker_names, worker_removals


def event(msg, timestamp=1.0):
    return EventRecord(1, "all", timestamp, msg, "scheduler")


def transition(seq, key, start, finish, where, timestamp):
    return TransitionRecord(seq, key, start, finish, {}, "s", timestamp, where, None)


def test_names_come_from_add_and_remove_worker_events():
    events = [
        event({"action": "add-worker", "worker": "tcp://a:1", "name": "0"}),
        event({"action": "add-client", "client": "c"}),
        event({"action": "remove-worker", "worker": "tcp://b:1", "name": 3}),
        event("not a dict"),
    ]
    names = worker_names(events)
    assert names == {"tcp://a:1": "0", "tcp://b:1": "3"}
    assert with_names("tcp://a:1", names) == "tcp://a:1 (0)"
    assert with_names("scheduler", names) == "scheduler"
    assert with_names("tcp://c:1", {"tcp://c:1": "tcp://c:1"}) == "tcp://c:1"


def test_removals_carry_their_time():
    removed = {"action": "remove-worker", "worker": "tcp://a:1", "cause": "killed"}
    assert worker_removals([event(removed, 5.0), event({"action": "add-worker"})]) == [
        {**removed, "time": 5.0}
    ]


def test_a_transfer_runs_from_flight_to_memory_on_the_receiving_worker():
    records = [
        transition(1, "x", "released", "fetch", "tcp://b:1", 1.0),
        transition(2, "x", "fetch", "flight", "tcp://b:1", 2.0),
        transition(3, "x", "waiting", "processing", "scheduler", 2.5),
        transition(5, "y", "fetch", "flight", "tcp://b:1", 3.0),
        transition(6, "y", "flight", "fetch", "tcp://b:1", 3.5),  # failed: not a transfer
        transition(4, "x", "flight", "memory", "tcp://b:1", 2.75),
    ]
    assert transfers(records) == [{"key": "x", "worker": "tcp://b:1", "start": 2.0, "stop": 2.75}]
