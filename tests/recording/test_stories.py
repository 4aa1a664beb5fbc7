"""Task stories over a real cluster (issue 3, point 2): by key and by stimulus id, rich
transition queries, worker stories and the merged cluster-wide story."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import pytest

from storied import Client, config

from .helpers import (
    break_worker_story,
    inc,
    mend_worker_story,
    own_story_from_the_task,
    small_cluster,
    unique,
    worker_story,
)

RECORD_FIELDS = {
    "seq",
    "key",
    "start",
    "finish",
    "recommendations",
    "stimulus_id",
    "timestamp",
    "where",
    "worker",
}


def fresh() -> int:
    """An argument no other test uses, so that pure keys are new."""
    return uuid.uuid4().int % 10**12


def test_story_by_update_graph_stimulus_has_every_key_it_submitted(cluster, client):
    futures = client.map(inc, [fresh() for _ in range(4)])
    client.gather(futures)
    keys = {f.key for f in futures}
    s = cluster.scheduler
    [submitted] = s.transitions(keys=[futures[0].key], start="released", finish="waiting")
    assert submitted.stimulus_id.startswith("update-graph-")

    story = s.story(submitted.stimulus_id)
    released = [
        key for key, start, finish, _, _ in story if (start, finish) == ("released", "waiting")
    ]
    assert sorted(released) == sorted(keys)
    assert {key for key, *_ in story} == keys
    assert [entry[4] for entry in story] == sorted(entry[4] for entry in story)

    cluster_story = client.story(submitted.stimulus_id)
    assert {entry["stimulus_id"] for entry in cluster_story} == {submitted.stimulus_id}
    assert {entry["where"] for entry in cluster_story} > {"scheduler"}


def test_a_story_of_a_key_and_a_stimulus_has_each_transition_once(cluster, client):
    future = client.submit(inc, fresh())
    future.result(timeout=10)
    s = cluster.scheduler
    [finished] = s.transitions(keys=[future.key], finish="memory")
    both = s.story(future.key, finished.stimulus_id)
    assert both == s.story(future.key)


def test_transitions_filters(cluster, client):
    a = client.submit(inc, fresh())
    b = client.submit(inc, a)
    b.result(timeout=10)
    s = cluster.scheduler
    workers = set(client.scheduler_info()["workers"])

    mine = s.transitions(keys=[a.key, b.key])
    assert {r.key for r in mine} == {a.key, b.key}
    assert [(r.start, r.finish) for r in mine if r.key == a.key] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
    ]
    assert all(set(r.as_dict()) == RECORD_FIELDS for r in mine)
    assert all(r.where == "scheduler" for r in mine)
    assert [r.seq for r in mine] == sorted(r.seq for r in mine)

    # worker: set where a worker is involved, None where none is
    by_step = {(r.key, r.start, r.finish): r for r in mine}
    assert by_step[(a.key, "released", "waiting")].worker is None
    assert by_step[(a.key, "waiting", "processing")].worker in workers
    assert by_step[(b.key, "processing", "memory")].worker in workers

    finished_a = by_step[(a.key, "processing", "memory")]
    assert s.transitions(stimulus_id=finished_a.stimulus_id, keys=[a.key]) == [finished_a]
    assert all(
        r.stimulus_id == finished_a.stimulus_id
        for r in s.transitions(stimulus_id=finished_a.stimulus_id)
    )
    assert [r.key for r in s.transitions(keys=[a.key, b.key], finish="memory")] == [a.key, b.key]
    assert {(r.start, r.finish) for r in s.transitions(keys=[b.key], start="waiting")} == {
        ("waiting", "processing")
    }

    first, second, *rest = [r for r in mine if r.key == a.key]
    since = s.transitions(keys=[a.key], since=second.timestamp)
    assert since == [second, *rest]  # since is inclusive
    assert s.transitions(keys=[a.key], until=second.timestamp) == [first]  # until is exclusive
    assert s.transitions(keys=[a.key], since=first.timestamp, until=rest[0].timestamp) == [
        first,
        second,
    ]
    assert s.transitions(keys=[a.key, b.key], limit=2) == mine[-2:]  # the newest
    assert len(s.transitions(limit=5)) == 5
    assert s.transitions(since=mine[-1].timestamp + 3600) == []


def test_remote_transitions_query_returns_the_same_records(cluster, client):
    future = client.submit(inc, fresh())
    future.result(timeout=10)
    local = [r.as_dict() for r in cluster.scheduler.transitions(keys=[future.key])]
    remote = client.run_on_scheduler(
        lambda key, dask_scheduler: [r.as_dict() for r in dask_scheduler.transitions(keys=[key])],
        future.key,
    )
    assert remote == local


def test_worker_story_is_six_tuples_of_that_workers_transitions(client):
    runner, bystander = sorted(client.scheduler_info()["workers"])
    future = client.submit(inc, fresh(), workers=[runner])
    future.result(timeout=10)
    stories = client.run(worker_story, future.key)
    assert stories[bystander] == []
    story = stories[runner]
    assert [(key, start, finish) for key, start, finish, *_ in story] == [
        (future.key, "released", "ready"),
        (future.key, "ready", "executing"),
        (future.key, "executing", "memory"),
    ]
    assert all(type(entry) is tuple for entry in story)
    for _key, _start, _finish, recommendations, stimulus_id, timestamp in story:
        assert isinstance(recommendations, dict)
        assert isinstance(stimulus_id, str) and stimulus_id
        assert isinstance(timestamp, float)
    assert story[0][4].startswith("update-graph-")
    assert story[-1][4].startswith("task-finished-")
    assert [entry[5] for entry in story] == sorted(entry[5] for entry in story)


def test_cluster_story_merges_every_place_in_time_order(client):
    first, second = sorted(client.scheduler_info()["workers"])
    a = client.submit(inc, fresh(), workers=[first])
    b = client.submit(inc, a, workers=[second])  # second fetches a from first
    b.result(timeout=10)

    entries = client.story(a)
    assert all(set(entry.as_dict()) == {*RECORD_FIELDS, "run_id", "failure"} for entry in entries)
    assert {entry["where"] for entry in entries} == {"scheduler", first, second}
    timestamps = [entry["timestamp"] for entry in entries]
    assert timestamps == sorted(timestamps)
    fetched = [(e["start"], e["finish"]) for e in entries if e["where"] == second]
    assert ("flight", "memory") in fetched
    ran = [(e["start"], e["finish"]) for e in entries if e["where"] == first]
    assert ran == [("released", "ready"), ("ready", "executing"), ("executing", "memory")]
    scheduler_part = [e for e in entries if e["where"] == "scheduler"]
    assert [
        (e["key"], e["start"], e["finish"], e["recommendations"], e["timestamp"])
        for e in scheduler_part
    ] == [
        tuple(t)
        for t in client.run_on_scheduler(
            lambda key, dask_scheduler: dask_scheduler.story(key), a.key
        )
    ]


def test_cluster_story_raises_or_skips_a_worker_that_cannot_answer(client):
    good, troubled = sorted(client.scheduler_info()["workers"])
    future = client.submit(inc, fresh(), workers=[good])
    future.result(timeout=10)
    client.run(break_worker_story, workers=[troubled])
    try:
        with pytest.raises(RuntimeError, match=troubled):
            client.story(future.key)
        entries = client.story(future.key, on_error="ignore")
    finally:
        client.run(mend_worker_story, workers=[troubled])
    assert {entry["where"] for entry in entries} == {"scheduler", good}
    assert client.story(future.key) == entries


def test_on_error_must_be_raise_or_ignore(client):
    with pytest.raises(ValueError, match="on_error"):
        client.story("some-key", on_error="warn")


def test_unknown_keys_have_empty_stories(cluster, client):
    nobody = unique("never-submitted")
    assert cluster.scheduler.story(nobody) == []
    assert cluster.scheduler.transitions(keys=[nobody]) == []
    assert client.story(nobody) == []
    assert client.story(nobody, on_error="ignore") == []
    assert client.run(worker_story, nobody) == {
        address: [] for address in cluster.scheduler.workers
    }


def test_a_task_can_read_its_workers_story_from_its_own_thread(client):
    story = client.submit(own_story_from_the_task, fresh()).result(timeout=10)
    assert story == [("released", "ready"), ("ready", "executing")]
    outside = client.run(lambda dask_worker: dask_worker.get_current_task())
    assert set(outside.values()) == {None}  # not on a task's thread


def keep_transitions(keep: bool, dask_worker: Any = None) -> None:
    dask_worker._recorder.keep = keep


def test_recording_switched_off_keeps_no_transitions_until_switched_on():
    """``record-transitions: false`` is how the benchmarks price the record; the worker's
    recorder picks its path when switched, not per transition."""
    switched_off = {"scheduler.record-transitions": False, "worker.record-transitions": False}
    with config.set(switched_off), small_cluster() as cluster, Client(cluster) as client:
        argument = fresh()
        quiet = client.submit(inc, argument)
        assert quiet.result(timeout=10) == argument + 1
        assert cluster.scheduler.story(quiet.key) == []
        assert client.story(quiet.key) == []

        client.run(keep_transitions, True)
        kept = client.submit(inc, fresh())
        kept.result(timeout=10)
        [worker_story_of_kept] = client.run(worker_story, kept.key).values()
        assert [(start, finish) for _, start, finish, *_ in worker_story_of_kept][:2] == [
            ("released", "ready"),
            ("ready", "executing"),
        ]
        assert cluster.scheduler.story(kept.key) == [], "only the workers were switched on"

        client.run(keep_transitions, False)
        again = client.submit(inc, fresh())
        again.result(timeout=10)
        assert client.run(worker_story, again.key) == {
            address: [] for address in cluster.scheduler.workers
        }


WORKER_STATES = {"released", "fetch", "flight", "waiting", "ready", "executing", "memory"}
SCHEDULER_STATES = {"released", "waiting", "no-worker", "processing", "memory", "erred"}


def test_cluster_story_entries_unpack_as_dask_s(client):
    future = client.submit(inc, fresh())
    future.result(timeout=10)
    entries = client.story(future)
    for where, key, start, finish, recommendations, stimulus_id, timestamp in entries:
        assert key == future.key and isinstance(recommendations, dict)
        assert start in WORKER_STATES | SCHEDULER_STATES and finish != start
        assert isinstance(stimulus_id, str) and isinstance(timestamp, float)
        assert where == "scheduler" or where.startswith("tcp://")
    first = entries[0]
    assert (first.where, first.start, first.finish) == ("scheduler", "released", "waiting")
    assert first["stimulus_id"] == first.stimulus_id == first[5]
    assert isinstance(first.seq, int) and first.worker is None
    worker_side = [e for e in entries if e.where != "scheduler"]
    assert [(e.start, e.finish) for e in worker_side][-1] == ("executing", "memory")
    assert pickle.loads(pickle.dumps(first)).as_dict() == first.as_dict()


def test_cluster_story_takes_dask_tuple_keys(client):
    client.get({("story-tuple", 0): (inc, 1)}, ("story-tuple", 0))
    assert client.story(("story-tuple", 0)) == client.story(str(("story-tuple", 0)))
    assert client.story(("story-tuple", 0))
