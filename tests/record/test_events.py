from __future__ import annotations

import gc

import pytest

from storied.record.events import EventLedger, check_event, pack_event, unpack_msg


class Int64:
    """Stands in for numpy.int64: an integer-like type msgpack cannot pack."""


Int64.__module__ = "numpy"
Int64.__qualname__ = "int64"


def test_check_event_accepts_plain_values_and_normalises_topics():
    msg = {"a": [1, 2.5, None, True, b"x", ("t", {"n": -(2**63)})], "b": 2**64 - 1}
    assert check_event("runtimes", msg) == ["runtimes"]
    assert check_event(("a", "b"), None) == ["a", "b"]
    assert check_event(["a"], "text") == ["a"]


@pytest.mark.parametrize("topic", [1, None, [], ["a", 2], {"a"}])
def test_check_event_rejects_bad_topics(topic):
    with pytest.raises(TypeError, match="event topic must be a str"):
        check_event(topic, {})


#: both refuse the same messages with the same words: pack_event only asks check_event to name
#: what the C packer refused
CHECKERS = pytest.mark.parametrize("check", [check_event, pack_event])


@CHECKERS
def test_check_event_names_the_path_and_type_of_an_unserializable_value(check):
    with pytest.raises(TypeError) as info:
        check("t", {"x": [0, 1, Int64()]})
    assert str(info.value).startswith(
        "event message is not msgpack-serializable: msg['x'][2] is numpy.int64; convert it to a "
        "plain Python type"
    )


@pytest.mark.parametrize(
    ("msg", "fragment"),
    [
        ({1: "a"}, "msg has a key 1 of type int; keys must be str"),
        ({"n": 2**64}, "msg['n'] is an int outside the 64-bit range"),
        ([{1, 2}], "msg[0] is set"),
        (object(), "msg is object"),
    ],
)
@CHECKERS
def test_check_event_error_messages(check, msg, fragment):
    with pytest.raises(TypeError, match="not msgpack-serializable") as info:
        check("t", msg)
    assert fragment in str(info.value)


@CHECKERS
def test_check_event_refuses_self_reference_and_deep_nesting_without_recursion_error(check):
    looped: dict = {"a": []}
    looped["a"].append(looped)
    with pytest.raises(TypeError, match=r"msg\['a'\]\[0\] contains itself"):
        check("t", looped)
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper"):
        check("t", deep)


def test_pack_event_packs_what_it_accepts_and_normalises_topics():
    msg = {"a": [1, 2.5, None, True, b"x", ("t", {"n": -(2**63)})], "b": 2**64 - 1}
    topics, packed = pack_event("t", msg)
    assert topics == ["t"]
    assert unpack_msg(packed) == {
        "a": [1, 2.5, None, True, b"x", ["t", {"n": -(2**63)}]],
        "b": 2**64 - 1,
    }
    with pytest.raises(TypeError, match="event topic"):
        pack_event(["t", 1], {})


@pytest.mark.parametrize("topic", [["t"], ["t", "u"]])
def test_the_topics_are_a_copy_the_caller_cannot_change_afterwards(topic):
    topics, _ = pack_event(topic, {})
    topic.append("changed later")
    assert "changed later" not in topics


def test_shared_but_not_cyclic_values_are_fine():
    shared = [1, 2]
    assert check_event("t", {"a": shared, "b": shared, "c": (shared, shared)}) == ["t"]


def test_event_ledger_keeps_the_newest_per_topic_and_counts_all():
    ledger = EventLedger(maxlen_per_topic=3)
    for number in range(5):
        ledger.add(["a"], {"n": number}, "scheduler", timestamp=float(number))
    stamp = ledger.add(["a", "b"], "both", "client-1")
    assert ledger.get("a") == ((3.0, {"n": 3}), (4.0, {"n": 4}), (stamp, "both"))
    assert ledger.get("b") == ((stamp, "both"),)
    assert ledger.get("unknown") == ()
    assert ledger.counts() == {"a": 6, "b": 1}
    assert set(ledger.get()) == {"a", "b"}
    assert ledger.topics() == ["a", "b"]
    detail = ledger.get_detail("b")
    assert detail[0].source == "client-1" and detail[0].topic == "b"
    assert [rec.seq for rec in ledger.get_detail()["a"]] == [4, 5, 6]
    assert ledger.oldest_seq("a") == 4 and ledger.oldest_seq("unknown") is None


def test_event_ledger_keeps_the_message_as_it_was_when_logged():
    ledger = EventLedger(10)
    msg = {"start": 1.0, "tags": ["a"]}
    ledger.add(["t"], msg, "scheduler", timestamp=2.0)
    msg["tags"].append("changed later")
    assert ledger.get("t") == ((2.0, {"start": 1.0, "tags": ["a"]}),)


def test_stored_events_are_invisible_to_the_garbage_collector():
    ledger = EventLedger(10)
    ledger.add(["t"], {"nested": [{"deep": [1, 2]}]}, "scheduler")
    gc.collect()
    assert not any(gc.is_tracked(stored) for stored in ledger._by_topic["t"])


def test_events_after_a_seq_are_the_newer_ones_oldest_first() -> None:
    ledger = EventLedger(maxlen_per_topic=10)
    ledger.add(["a"], {"n": 1}, "scheduler")
    ledger.add(["b", "a"], {"n": 2}, "scheduler")  # seqs 2 (b) and 3 (a)
    ledger.add(["b"], {"n": 3}, "scheduler")
    assert [(r.seq, r.topic, r.msg) for r in ledger.after(1)] == [
        (2, "b", {"n": 2}),
        (3, "a", {"n": 2}),
        (4, "b", {"n": 3}),
    ]
    assert [r.seq for r in ledger.after(2, "a")] == [3]
    assert ledger.after(4) == [] and ledger.after(0, "nothing") == []
