"""get_worker() inside tasks and the scheduler's story (issue 2, points 8 and 9)."""

from __future__ import annotations

import uuid

import pytest

from storied import get_worker

from .helpers import inc, poll, where_am_i


def log_from_task(topic: str) -> str:
    worker = get_worker()
    worker.log_event(topic, {"from": worker.address})
    return worker.address


def test_get_worker_inside_a_task_is_the_worker_running_it(client):
    workers = client.scheduler_info()["workers"]
    for address, info in workers.items():
        future = client.submit(where_am_i, workers=[address], pure=False)
        assert future.result(timeout=10) == (address, info["name"])


def test_get_worker_log_event_reaches_the_ledger(client):
    topic = f"topic-{uuid.uuid4().hex}"
    address = client.submit(log_from_task, topic).result(timeout=10)
    [(timestamp, msg)] = poll(lambda: client.get_events(topic))
    assert msg == {"from": address}
    assert isinstance(timestamp, float)


def test_get_worker_outside_a_task_raises():
    with pytest.raises(ValueError, match="outside a task"):
        get_worker()


def test_story_has_exactly_the_seed_shape(cluster, client):
    future = client.submit(inc, 123 + uuid.uuid4().int)
    future.result(timeout=10)
    key = future.key
    story = cluster.scheduler.story(key)
    assert [entry[:4] for entry in story] == [
        (key, "released", "waiting", {key: "processing"}),
        (key, "waiting", "processing", {}),
        (key, "processing", "memory", {}),
    ]
    timestamps = [entry[4] for entry in story]
    assert all(isinstance(t, float) for t in timestamps)
    assert timestamps == sorted(timestamps)
    assert all(type(entry) is tuple and len(entry) == 5 for entry in story)


def test_story_of_several_keys_is_oldest_first(cluster, client):
    a = client.submit(inc, uuid.uuid4().int)
    b = client.submit(inc, a)
    b.result(timeout=10)
    story = cluster.scheduler.story(a.key, b.key)
    assert {entry[0] for entry in story} == {a.key, b.key}
    assert [entry[4] for entry in story] == sorted(entry[4] for entry in story)
    assert (b.key, "waiting", "processing", {}) in [entry[:4] for entry in story]
