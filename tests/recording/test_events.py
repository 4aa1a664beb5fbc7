"""Structured events over a real cluster (issue 3, point 3): logging from the client, from
tasks and from the scheduler, validation at the call site, bounds and counts, and the
administrative events the cluster logs by itself."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine.helpers import poll, wait_for_file

from storied import Client, config

from .helpers import (
    BAD_EVENTS,
    bad_event,
    fail,
    inc,
    log_bad_event_from_scheduler,
    log_bad_event_from_task,
    log_from_scheduler,
    log_from_task,
    log_many_from_task,
    log_reusing_one_dict,
    log_reusing_one_dict_from_scheduler,
    log_reusing_one_dict_from_task,
    send_malformed_event_batch,
    small_cluster,
    unique,
)

SOURCES = ["client", "worker", "scheduler"]

#: every type msgpack carries faithfully, nested
RICH_MSG = {
    "none": None,
    "flags": [True, False],
    "ints": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1],
    "float": 0.1,
    "text": "naïve ✓",
    "blob": b"\x00\xffbytes",
    "nested": {"list": [1, [2, [3, {"deep": b"x"}]]], "empty": {}, "nothing": []},
}

LogFrom = Callable[[str, Any, Any], str]


@pytest.fixture
def log_from(client: Client) -> LogFrom:
    """``log_from(source, topic, msg)`` logs from the client, a task or the scheduler and
    returns the ``source`` the ledger should name."""

    def log(source: str, topic: Any, msg: Any) -> str:
        if source == "client":
            client.log_event(topic, msg)
            return client.id
        if source == "worker":
            return client.submit(log_from_task, topic, msg, pure=False).result(timeout=10)
        client.run_on_scheduler(log_from_scheduler, topic, msg)
        return "scheduler"

    return log


def events_of(client: Client, topic: str, n: int = 1, **kwargs: Any) -> Any:
    """The events of ``topic`` once there are at least ``n`` (they travel asynchronously)."""
    return poll(
        lambda: (found := client.get_events(topic, **kwargs)) and len(found) >= n and found,
        what=f"{n} events under {topic}",
    )


@pytest.mark.parametrize("source", SOURCES)
def test_a_list_of_topics_logs_under_each_with_its_source_beside_it(client, log_from, source):
    first, second = unique("first"), unique("second")
    expected_source = log_from(source, [first, second], {"n": 1})
    for topic in (first, second):
        [event] = events_of(client, topic, detail=True)
        assert event["topic"] == topic
        assert event["msg"] == {"n": 1}  # the source is beside the message, not in it
        assert event["source"] == expected_source
        [(timestamp, msg)] = client.get_events(topic)
        assert (timestamp, msg) == (event["timestamp"], event["msg"])
    assert client.get_events(first)[0][0] == client.get_events(second)[0][0]


@pytest.mark.parametrize("source", SOURCES)
def test_msg_comes_back_exactly_as_logged(client, log_from, source):
    topic = unique("rich")
    log_from(source, topic, RICH_MSG)
    [(_, msg)] = events_of(client, topic)
    assert msg == RICH_MSG
    assert type(msg["blob"]) is bytes and type(msg["nested"]["list"][1][1][1]["deep"]) is bytes


@pytest.mark.parametrize("source", SOURCES)
def test_tuples_come_back_as_lists(client, log_from, source):
    """Tuples are allowed in msg; msgpack has one array type, so they come back as lists
    (as in Dask), the same from memory, the wire and the ledger."""
    topic = unique("tuples")
    log_from(source, topic, {"pair": (1, 2), "rows": [(3, "c")]})
    [(_, msg)] = events_of(client, topic)
    assert msg == {"pair": [1, 2], "rows": [[3, "c"]]}


@pytest.mark.parametrize("source", SOURCES)
def test_msg_is_stored_as_it_was_when_logged(client, source):
    """Changing a dict after logging it must not change the event already logged."""
    topic = unique("reused")
    if source == "client":
        log_reusing_one_dict(client.log_event, topic, 50)
    elif source == "worker":
        client.submit(log_reusing_one_dict_from_task, topic, 50).result(timeout=10)
    else:
        client.run_on_scheduler(log_reusing_one_dict_from_scheduler, topic, 50)
    events = events_of(client, topic, n=50)
    assert [msg["i"] for _, msg in events] == list(range(50))


def test_events_are_oldest_first_with_increasing_timestamps(client):
    topic = unique("ordered")
    for i in range(20):
        client.log_event(topic, i)
    events = events_of(client, topic, n=20)
    assert [msg for _, msg in events] == list(range(20))
    assert [t for t, _ in events] == sorted(t for t, _ in events)
    assert type(events) is tuple and all(type(e) is tuple and len(e) == 2 for e in events)


def test_get_events_without_a_topic_is_every_non_empty_topic(client):
    topic = unique("listed")
    client.log_event(topic, "hello")
    events_of(client, topic)
    everything = client.get_events()
    assert isinstance(everything, dict)
    assert everything[topic] == client.get_events(topic)
    assert all(isinstance(events, tuple) and events for events in everything.values())
    assert {"all", "scheduler"} <= set(everything)
    assert unique("never-used") not in everything
    detailed = client.get_events(detail=True)
    assert [e["msg"] for e in detailed[topic]] == ["hello"]


def test_an_unknown_topic_has_no_events(client):
    assert client.get_events(unique("unknown")) == ()
    assert client.get_events(unique("unknown"), detail=True) == []


@pytest.mark.parametrize("case", BAD_EVENTS)
def test_client_refuses_an_unserializable_event_at_the_call_site(client, case):
    topic = unique("refused")
    with pytest.raises(TypeError, match=re.escape(BAD_EVENTS[case])) as caught:
        client.log_event(*bad_event(case, topic))
    assert caught.traceback[-1].path.name == "events.py"  # raised in the caller's thread
    client.log_event(topic, "still fine")
    assert [msg for _, msg in events_of(client, topic)] == ["still fine"]


@pytest.mark.parametrize("case", BAD_EVENTS)
def test_a_task_logging_an_unserializable_event_errs_and_its_worker_lives(client, case):
    workers = dict(client.scheduler_info()["workers"])
    target = sorted(workers)[0]
    topic = unique("refused")
    future = client.submit(log_bad_event_from_task, case, topic, workers=[target], pure=False)
    error = future.exception(timeout=10)
    assert isinstance(error, TypeError)
    assert BAD_EVENTS[case] in str(error)
    assert client.submit(log_from_task, topic, "after", workers=[target]).result(10) == target
    assert [msg for _, msg in events_of(client, topic)] == ["after"]
    assert client.scheduler_info()["workers"].keys() == workers.keys()


@pytest.mark.parametrize("case", BAD_EVENTS)
def test_the_scheduler_refuses_an_unserializable_event_and_keeps_working(client, case):
    topic = unique("refused")
    with pytest.raises(TypeError, match=re.escape(BAD_EVENTS[case])):
        client.run_on_scheduler(log_bad_event_from_scheduler, case, topic)
    assert client.get_events(topic) == ()
    assert client.submit(inc, 41).result(timeout=10) == 42
    client.run_on_scheduler(log_from_scheduler, topic, "after")
    assert [msg for _, msg in client.get_events(topic)] == ["after"]


def test_malformed_events_in_a_worker_batch_are_dropped_one_by_one(client):
    topic = unique("malformed")
    worker = next(iter(client.scheduler_info()["workers"]))
    client.run(send_malformed_event_batch, topic, workers=[worker])
    assert [msg for _, msg in events_of(client, topic, n=2)] == ["first", "last"]
    assert client.submit(inc, 1).result(timeout=10) == 2  # the worker's connection stands


def test_events_from_many_tasks_are_all_kept(client):
    topic = unique("many")
    tasks, per_task = 200, 25
    client.gather(client.map(log_many_from_task, [topic] * tasks, range(tasks), [per_task] * tasks))
    total = tasks * per_task
    events = events_of(client, topic, n=total)
    assert len(events) == total
    assert {(m["task"], m["i"]) for _, m in events} == {
        (t, i) for t in range(tasks) for i in range(per_task)
    }
    counts = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.record.event_counts())
    assert counts[topic] == total


def test_each_topic_keeps_its_newest_events_and_counts_all():
    with (
        config.set({"scheduler.events-per-topic": 5}),
        small_cluster(n_workers=0) as cluster,
        Client(cluster) as client,
    ):
        topic, other = unique("bounded"), unique("other")
        for i in range(12):
            client.log_event(topic, i)
        client.log_event(other, "x")
        poll(lambda: client.get_events(other), what="the last event")

        assert [msg for _, msg in client.get_events(topic)] == [7, 8, 9, 10, 11]
        assert [e["msg"] for e in client.get_events(topic, detail=True)] == [7, 8, 9, 10, 11]
        counts = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.record.event_counts()
        )
        assert counts[topic] == 12
        assert counts[other] == 1
        assert len(client.get_events(other)) == 1


# ---------------------------------------------------------------------------- built-in topics

ADD_WORKER_FIELDS = {"action", "worker", "name", "nthreads"}
REMOVE_WORKER_FIELDS = {
    "action",
    "worker",
    "name",
    "cause",
    "reason",
    "expected",
    "processing-tasks",
    "lost-computed-tasks",
    "lost-scattered-tasks",
    "lost-tasks",
    "stimulus_id",
}


def test_a_worker_joining_and_leaving_is_logged_under_all_and_its_address():
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        cluster.scale(2)
        joined = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "1")
        cluster.scale(1)
        [added, removed] = [m for _, m in events_of(client, joined, n=2)]
        assert added == {"action": "add-worker", "worker": joined, "name": "1", "nthreads": 1}
        assert set(removed) == REMOVE_WORKER_FIELDS
        assert removed["action"] == "remove-worker"
        assert (removed["worker"], removed["name"]) == (joined, "1")
        assert removed["reason"] == "worker-close"
        assert (removed["cause"], removed["expected"]) == ("closed", True)
        assert removed["lost-tasks"] == []
        assert removed["stimulus_id"].startswith("worker-left-closed-")
        in_all = [m for _, m in client.get_events("all") if m.get("worker") == joined]
        assert in_all == [added, removed]
        first = next(m for _, m in client.get_events("all") if m["action"] == "add-worker")
        assert set(first) == ADD_WORKER_FIELDS


def test_a_lost_worker_names_the_tasks_it_took_with_it(tmp_path):
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        [(address, _)] = client.scheduler_info()["workers"].items()
        future = client.submit(wait_for_file, str(tmp_path / "never"))
        poll(
            lambda: getattr(cluster.scheduler.tasks.get(future.key), "state", None) == "processing",
            what="task running",
        )
        cluster.workers["0"].process.kill()
        removed = events_of(client, address, n=2)[-1][1]
        assert removed["action"] == "remove-worker"
        assert removed["lost-tasks"] == removed["processing-tasks"] == [future.key]
        assert removed["lost-computed-tasks"] == removed["lost-scattered-tasks"] == []
        assert removed["expected"] is False
        assert removed["stimulus_id"].startswith(f"worker-lost-{removed['cause']}-")
        assert removed["reason"]


def test_a_client_connecting_and_leaving_is_logged_under_all_and_its_id(cluster, client):
    with Client(cluster) as visitor:
        visitor_id = visitor.id
    events = [m for _, m in events_of(client, visitor_id, n=2)]
    assert events == [
        {"action": "add-client", "client": visitor_id},
        {"action": "remove-client", "client": visitor_id},
    ]
    in_all = [m for _, m in client.get_events("all") if m.get("client") == visitor_id]
    assert in_all == events


def test_a_submitted_graph_is_logged_under_scheduler(client):
    futures = client.map(inc, [unique("x").__hash__() for _ in range(3)])
    client.gather(futures)
    graphs = [m for _, m in client.get_events("scheduler") if m["client"] == client.id]
    assert graphs[-1] == {"action": "update-graph", "client": client.id, "n_tasks": 3}


def test_a_task_erring_is_logged_under_erred(client):
    future = client.submit(fail, unique("input"))
    future.exception(timeout=10)
    workers = client.scheduler_info()["workers"]
    [event] = [m for _, m in events_of(client, "erred") if m["key"] == future.key]
    assert set(event) == {
        *("action", "key", "exception", "traceback", "worker"),
        *("exception_type", "attempt", "duration", "dependents"),
    }
    assert event["action"] == "task-erred" and event["worker"] in workers
    assert event["exception_type"] == "ZeroDivisionError" and event["attempt"] == 1
    assert event["duration"] >= 0 and event["dependents"] == 0
    assert event["exception"].startswith("ZeroDivisionError: cannot handle")
    assert event["traceback"].startswith("Traceback (most recent call last)")
    assert event["traceback"].rstrip().endswith(event["exception"])
    assert event["worker"] in workers


def test_every_built_in_topic_is_documented():
    """The table in docs/logging.md names every action the cluster logs by itself."""
    table = Path(__file__).parents[2].joinpath("docs", "logging.md").read_text()
    for action in (
        "add-worker",
        "remove-worker",
        "add-client",
        "remove-client",
        "task-erred",
        "task-retried",
        "update-graph",
    ):
        assert f"`{action}`" in table
