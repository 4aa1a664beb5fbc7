from __future__ import annotations

import dataclasses
import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storied.record.transitions import TransitionLog, TransitionRecord, new_record

KEYS = [f"k{i}" for i in range(6)] + ["shared"]
STIMULI = [f"s{i}" for i in range(4)] + ["shared"]  # a name may be a key and a stimulus id

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


def chain_heads(log: TransitionLog) -> list[int]:
    return [
        ordinal
        for heads in (
            log._key_heads,
            log._stimulus_heads,
            log._older_key_heads,
            log._older_stimulus_heads,
        )
        for ordinal in heads.values()
    ]


@settings(max_examples=200, deadline=None)
@given(
    maxlen=st.integers(min_value=1, max_value=20),
    steps=st.lists(transitions, max_size=120),
    asked=st.lists(st.sampled_from(KEYS + STIMULI + ["absent"]), min_size=1, max_size=3),
    read_after=st.sets(st.integers(min_value=0, max_value=120), max_size=10),
)
def test_story_and_query_match_a_scan_of_the_retained_records(maxlen, steps, asked, read_after):
    """Reads in between index what is new since the last one (``read_after``): however many
    entries and generations went by unindexed, stories stay exact."""
    log = TransitionLog(maxlen)
    for number, (key, recommendations, stimulus_id) in enumerate(steps):
        log.append(
            key, "released", "waiting", recommendations, stimulus_id, timestamp=float(number)
        )
        if number in read_after:
            assert log.story(*asked) == brute_force_story(log, *asked)
    retained = list(log)
    assert len(log) == len(retained) == min(maxlen, len(steps))
    assert [rec.timestamp for rec in retained] == [float(n) for n in range(len(steps))][-maxlen:]
    assert log.total == len(steps)
    assert log.story(*asked) == brute_force_story(log, *asked)
    assert log.query(keys=asked) == [rec for rec in retained if rec.key in asked]
    assert log.query(stimulus_id=asked[0]) == [
        rec for rec in retained if rec.stimulus_id == asked[0]
    ]
    # the indexes forget whole generations: nothing older than two ring lengths stays in them
    assert all(ordinal > log.total - 2 * maxlen for ordinal in chain_heads(log))


def test_a_hot_key_keeps_its_story_and_its_index_stays_bounded():
    log = TransitionLog(50)
    for number in range(517):
        log.append("hot", "a", "b", {}, "same-stimulus", timestamp=float(number))
    story = log.story("hot")
    assert [rec.timestamp for rec in story] == [float(n) for n in range(467, 517)]
    assert len(chain_heads(log)) <= 4  # a name in each index, in each generation
    assert log.story("same-stimulus") == story
    assert log.story("hot", "same-stimulus") == story


def test_entries_that_fall_out_before_any_read_never_reach_the_index():
    log = TransitionLog(10)
    for number in range(15):
        log.append(f"early-{number}", "a", "b", {}, f"s-early-{number}", timestamp=float(number))
    assert len(log.story("early-13")) == 1
    for number in range(95):  # nine and a half ring lengths, none of them read
        log.append(f"late-{number}", "a", "b", {}, f"s-late-{number}", timestamp=float(number))
    assert log.story("early-13") == []
    assert [rec.key for rec in log.story("late-94", "late-85")] == ["late-85", "late-94"]
    assert all(ordinal > log.total - 2 * log.maxlen for ordinal in chain_heads(log))
    assert len(chain_heads(log)) <= 4 * log.maxlen


def test_record_fields_and_seed_tuple_format():
    log = TransitionLog(10, where="tcp://w:1")
    recommendations = {"inc-1": "processing"}
    entry = log.append(
        "inc-1", "released", "waiting", recommendations, "s1", "tcp://w", timestamp=1.5
    )
    assert entry == (1, "inc-1", "released", "waiting", "s1", 1.5, "tcp://w:1", "tcp://w")
    rec = TransitionRecord.from_entry(entry, recommendations)
    assert rec == TransitionRecord(1, *entry[1:4], recommendations, *entry[4:])
    assert rec.as_tuple() == ("inc-1", "released", "waiting", {"inc-1": "processing"}, 1.5)
    assert rec.as_dict()["where"] == "tcp://w:1"
    assert rec.as_dict()["worker"] == "tcp://w"
    assert log.story("inc-1") == [rec]  # named as key and in recommendations, listed once
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.key = "other"  # type: ignore[misc]


def test_fast_constructor_builds_the_same_record_as_the_dataclass():
    args = (7, "k", "a", "b", {"x": "y"}, "s", 2.0, "scheduler", "w")
    assert new_record(*args) == TransitionRecord(*args)


def test_readers_get_copies_of_the_recommendations():
    log = TransitionLog(10)
    log.append("a", "released", "waiting", {"b": "waiting"}, "s", timestamp=1.0)
    (story,) = log.story("a")
    story.recommendations["c"] = "memory"
    (queried,) = log.query(keys=["a"])
    queried.recommendations.clear()
    assert [rec.recommendations for rec in log] == [{"b": "waiting"}]
    assert log.story("c") == []


def test_story_by_stimulus_and_several_names_is_oldest_first_without_duplicates():
    log = TransitionLog(100)
    log.append("x", "released", "waiting", {"y": "waiting"}, "update-graph", timestamp=1.0)
    log.append("y", "released", "waiting", {}, "update-graph", timestamp=1.1)
    log.append("z", "released", "waiting", {}, "other", timestamp=1.2)
    log.append("x", "waiting", "processing", {}, "task-finished", timestamp=1.3)
    first, second, _, third = list(log)
    assert log.story("update-graph") == [first, second]
    assert log.story("x", "y", "update-graph") == [first, second, third]
    assert log.story("nothing") == []


def test_seq_and_oldest_seq_follow_eviction():
    log = TransitionLog(2)
    assert log.oldest_seq is None
    assert list(log) == []
    for number in range(5):
        log.append(f"k{number}", "a", "b", {}, "s", timestamp=float(number))
    assert [rec.seq for rec in log] == [4, 5]
    assert log.oldest_seq == 4
    assert log.maxlen == 2


def test_entries_after_hands_over_new_entries_and_counts_what_the_ring_overwrote():
    log = TransitionLog(4, "tcp://w:1", seq=iter(range(100, 200)))
    handed = [{"k0": "memory"}, {}, {}]
    appended = [
        log.append(f"k{n}", "a", "b", handed[n], "s", "w", timestamp=float(n)) for n in range(3)
    ]
    newest, lost, entries, recommendations = log.entries_after(0)
    assert (newest, lost, entries) == (3, 0, appended)
    assert appended[0] == (100, "k0", "a", "b", "s", 0.0, "tcp://w:1", "w")
    assert recommendations[0] is handed[0]  # handed over, not copied
    assert log.entries_after(newest) == (3, 0, [], [])
    for n in range(3, 9):  # wraps the ring twice over, past what was read
        log.append(f"k{n}", "a", "b", {}, "s", timestamp=float(n))
    newest, lost, entries, _ = log.entries_after(3)
    # entries 4 and 5 were overwritten; 6, the oldest in the full ring, might be being
    # overwritten by an append on another thread, so it is left out and counted as well
    assert (newest, lost) == (9, 3)
    assert [entry[1] for entry in entries] == ["k6", "k7", "k8"]


def test_query_filters_are_anded_and_limit_keeps_the_newest():
    log = TransitionLog(100)
    for number in range(10):
        key = "even" if number % 2 == 0 else "odd"
        finish = "memory" if number % 3 == 0 else "processing"
        log.append(
            key, "waiting", finish, {"other": "released"}, f"s{number % 2}", timestamp=float(number)
        )
    assert [r.timestamp for r in log.query(keys=["even"], finish="memory")] == [0.0, 6.0]
    assert [r.timestamp for r in log.query(stimulus_id="s1", since=3.0, until=8.0)] == [3, 5, 7]
    assert [r.timestamp for r in log.query(start="waiting", limit=3)] == [7.0, 8.0, 9.0]
    assert log.query(keys=["other"]) == []  # keys match a record's own key
    assert log.query(limit=0) == []
    assert log.query(start="released") == []


class CountingReads(list):  # type: ignore[type-arg]
    """A ring column that counts the entries read out of it."""

    reads = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().__getitem__(index)


def test_a_story_among_many_records_reads_only_the_index():
    """How fast that is, bench/story_lookup.py shows; here, that a story reads its own entries
    and no others (a scan would read all 200,000)."""
    log = TransitionLog(200_000)
    for task in range(40_000):
        key = f"task-{task}"
        for step in range(5):
            log.append(key, "a", "b", {}, f"stim-{task}-{step}", timestamp=0.0)
    log.story("task-0")  # links the chains of everything appended so far
    log._entries = entries = CountingReads(log._entries)
    for task in range(0, 40_000, 400):
        entries.reads = 0
        assert [rec.stimulus_id for rec in log.story(f"task-{task}")] == [
            f"stim-{task}-{step}" for step in range(5)
        ]
        assert entries.reads <= 2 * 5  # each entry once to follow its chain, once to build it


def test_maxlen_must_be_positive():
    with pytest.raises(ValueError, match="maxlen"):
        TransitionLog(0)


def test_logged_entries_are_not_left_for_the_garbage_collector_to_track():
    log = TransitionLog(100)
    for number in range(150):
        log.append(
            f"k{number}", "a", "b", {f"k{number + 1}": "waiting"}, "s", "w", timestamp=float(number)
        )
    gc.collect()
    columns = (log._entries, log._recommendations, log._recommended_links)
    assert not any(gc.is_tracked(value) for column in columns for value in column)
    assert not any(gc.is_tracked(heads) for heads in (log._key_heads, log._older_key_heads))
    assert log.story("k100")[0] == log.story("k99")[-1]  # k99 recommended k100
