from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storied.record.transitions import TransitionLog, TransitionRecord, _new_record

KEYS = [f"k{i}" for i in range(6)]
STIMULI = [f"s{i}" for i in range(4)]

transitions = st.tuples(
    st.sampled_from(KEYS),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(["waiting", "memory"]), max_size=3),
    st.sampled_from(STIMULI),
)


def brute_force_story(log: TransitionLog, *names: str) -> list[TransitionRecord]:
    wanted = set(names)
    return [
        rec
        for rec in log
        if rec.key in wanted or wanted & rec.recommendations.keys() or rec.stimulus_id in wanted
    ]


@settings(max_examples=200, deadline=None)
@given(
    maxlen=st.integers(min_value=1, max_value=20),
    steps=st.lists(transitions, max_size=120),
    asked=st.lists(st.sampled_from(KEYS + STIMULI + ["absent"]), min_size=1, max_size=3),
)
def test_story_matches_a_scan_of_the_retained_records(maxlen, steps, asked):
    log = TransitionLog(maxlen)
    for number, (key, recommendations, stimulus_id) in enumerate(steps):
        log.append(key, "released", "waiting", recommendations, stimulus_id, float(number))
    assert len(log) == min(maxlen, len(steps))
    assert log.total == len(steps)
    assert log.story(*asked) == brute_force_story(log, *asked)
    # evicted records leave no trace in the indexes
    indexed = {
        id(rec)
        for index in (log._by_key, log._by_stimulus)
        for b in index.values()
        for rec in b.live()
    }
    assert indexed <= {id(rec) for rec in log}


def test_eviction_of_a_long_bucket_compacts_it_and_keeps_order():
    log = TransitionLog(50)
    for number in range(500):
        log.append("hot", "a", "b", {}, "same-stimulus", float(number))
    story = log.story("hot")
    assert [rec.timestamp for rec in story] == [float(n) for n in range(450, 500)]
    assert len(log._by_key["hot"].items) < 100
    assert log.story("same-stimulus") == story


def test_record_fields_and_seed_tuple_format():
    log = TransitionLog(10, where="tcp://w:1")
    rec = log.append("inc-1", "released", "waiting", {"inc-1": "processing"}, "s1", 1.5, "tcp://w")
    assert rec.as_tuple() == ("inc-1", "released", "waiting", {"inc-1": "processing"}, 1.5)
    assert rec.as_dict()["where"] == "tcp://w:1"
    assert rec.as_dict()["worker"] == "tcp://w"
    assert log.story("inc-1") == [rec]  # named as key and in recommendations, listed once
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.key = "other"  # type: ignore[misc]


def test_fast_constructor_builds_the_same_record_as_the_dataclass():
    args = (7, "k", "a", "b", {"x": "y"}, "s", 2.0, "scheduler", "w")
    assert _new_record(*args) == TransitionRecord(*args)


def test_recommendations_are_copied():
    log = TransitionLog(10)
    recommendations = {"b": "waiting"}
    rec = log.append("a", "released", "waiting", recommendations, "s", 1.0)
    recommendations["c"] = "memory"
    assert rec.recommendations == {"b": "waiting"}
    assert log.story("c") == []


def test_story_by_stimulus_and_several_names_is_oldest_first_without_duplicates():
    log = TransitionLog(100)
    first = log.append("x", "released", "waiting", {"y": "waiting"}, "update-graph", 1.0)
    second = log.append("y", "released", "waiting", {}, "update-graph", 1.1)
    log.append("z", "released", "waiting", {}, "other", 1.2)
    third = log.append("x", "waiting", "processing", {}, "task-finished", 1.3)
    assert log.story("update-graph") == [first, second]
    assert log.story("x", "y", "update-graph") == [first, second, third]
    assert log.story("nothing") == []


def test_seq_and_oldest_seq_follow_eviction():
    log = TransitionLog(2)
    assert log.oldest_seq is None
    for number in range(5):
        log.append(f"k{number}", "a", "b", {}, "s", float(number))
    assert [rec.seq for rec in log] == [4, 5]
    assert log.oldest_seq == 4
    assert log.maxlen == 2


def test_query_filters_are_anded_and_limit_keeps_the_newest():
    log = TransitionLog(100)
    for number in range(10):
        key = "even" if number % 2 == 0 else "odd"
        finish = "memory" if number % 3 == 0 else "processing"
        log.append(key, "waiting", finish, {"other": "released"}, f"s{number % 2}", float(number))
    assert [r.timestamp for r in log.query(keys=["even"], finish="memory")] == [0.0, 6.0]
    assert [r.timestamp for r in log.query(stimulus_id="s1", since=3.0, until=8.0)] == [3, 5, 7]
    assert [r.timestamp for r in log.query(start="waiting", limit=3)] == [7.0, 8.0, 9.0]
    assert log.query(keys=["other"]) == []  # keys match a record's own key
    assert log.query(limit=0) == []
    assert log.query(start="released") == []


def test_maxlen_must_be_positive():
    with pytest.raises(ValueError, match="maxlen"):
        TransitionLog(0)
