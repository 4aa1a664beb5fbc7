from __future__ import annotations

import logging
from typing import Any

import pytest

from storied.record import Ledger, Record
from storied.record.blocks import pack_block
from storied.record.recovery import check
from storied.record.shipments import pack_shipment


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "ledger.db"


def run_task(record: Record, key: str) -> None:
    record.transition(key, "released", "waiting", {key: "processing"}, f"graph-{key}")
    record.transition(key, "waiting", "processing", {}, f"plan-{key}", worker="tcp://w:1")
    record.transition(key, "processing", "memory", {}, f"done-{key}")


def shipment(key: str, count: int, first_time: float = 1.0) -> list[Any]:
    """``count`` transitions of ``key`` on a worker, packed as the worker ships them."""
    return pack_shipment(shipped_columns(key, count, first_time))


def shipped_columns(key: str, count: int, first_time: float = 1.0) -> list[list[Any]]:
    """The columns of ``count`` transitions of ``key`` on a worker, as it packs them."""
    return [
        [key] * count,
        ["executing"] * count,
        ["memory"] * count,
        [{}] * count,
        [f"w{number}" for number in range(count)],
        [first_time + number for number in range(count)],
    ]


def test_memory_story_has_the_seed_format():
    record = Record()
    run_task(record, "inc-1")
    story = record.story("inc-1")
    assert [(k, s, f, r) for k, s, f, r, _ in story] == [
        ("inc-1", "released", "waiting", {"inc-1": "processing"}),
        ("inc-1", "waiting", "processing", {}),
        ("inc-1", "processing", "memory", {}),
    ]
    assert all(isinstance(entry[4], float) for entry in story)
    assert record.story("plan-inc-1") == story[1:2]
    assert record.story_records("inc-1")[1].worker == "tcp://w:1"
    assert record.run_id is None


def test_a_reader_of_recorded_transitions_is_called_once_at_the_one_it_asked_for():
    """What a worker ships comes from its record's own log, with one callback per shipment."""
    record = Record("tcp://w:1")
    calls: list[int] = []
    record.call_when_recorded(2, lambda: calls.append(record.transitions_recorded))
    run_task(record, "inc-1")
    run_task(record, "inc-2")
    assert calls == [2]  # once, as the second was recorded, not again after
    recorded, lost, entries, recommendations = record.transitions_after(4)
    assert (recorded, lost) == (6, 0)
    assert [(entry[1], entry[2], entry[3]) for entry in entries] == [
        ("inc-2", "waiting", "processing"),
        ("inc-2", "processing", "memory"),
    ]
    assert recommendations == [{}, {}]
    record.call_when_recorded(7, lambda: calls.append(-1))
    record.call_when_recorded(0, None)
    run_task(record, "inc-3")
    assert calls == [2]


def test_a_small_log_says_how_many_transitions_fell_out_before_they_were_read():
    record = Record("tcp://w:1", transition_log_length=4)
    for number in range(3):
        run_task(record, f"inc-{number}")
    recorded, lost, entries, _ = record.transitions_after(0)
    # the oldest slot is left out too: the recording thread may be overwriting it
    assert (recorded, lost, len(entries)) == (9, 6, 3)
    assert [entry[1] for entry in entries] == ["inc-2"] * 3


def test_a_durable_records_transitions_are_for_its_ledger_alone(ledger_path):
    record = Record(ledger=Ledger(ledger_path))
    try:
        with pytest.raises(RuntimeError, match="read by its ledger"):
            record.call_when_recorded(1, lambda: None)
    finally:
        record.close()


def test_shipped_worker_transitions_go_to_the_ledger_beside_the_scheduler_story(ledger_path):
    record = Record(ledger=Ledger(ledger_path))
    run_task(record, "a")
    assert record.worker_transitions("tcp://w:1", shipment("a", 5)) == 5
    assert len(record.story("a")) == 3  # the scheduler's own
    shipped = record.story_records("a", where="tcp://w:1")
    assert [r.stimulus_id for r in shipped] == [f"w{number}" for number in range(5)]
    assert {(r.where, r.worker) for r in shipped} == {("tcp://w:1", None)}
    assert [r.where for r in record.story_records("a")] == ["scheduler"] * 3 + ["tcp://w:1"] * 5
    assert record.story_records("w2") == shipped[2:3]
    assert record.story_records("a", where="tcp://nobody") == []
    assert len(record.transitions(keys=["a"], limit=4)) == 4
    assert record.transitions(finish="memory", where="tcp://w:1", limit=1)[0].stimulus_id == "w4"
    run_task(record, "b")  # seqs stay unique and in the order the record learnt of them
    seqs = [r.seq for r in record.transitions()]
    assert seqs == sorted(set(seqs)) and len(seqs) == 11
    record.close()


@pytest.mark.parametrize(
    ("shipped", "complaint"),
    [
        ("not a shipment", "packed shipment"),
        (shipment("a", 2)[:4], "packed shipment"),
        ([shipped_columns("a", 2), *shipment("a", 2)[1:]], "bytes"),
        ([*shipment("a", 2)[:2], None, *shipment("a", 2)[3:]], "bytes"),
        ([shipment("a", 2)[0], -1, *shipment("a", 2)[2:]], "int"),
        ([shipment("a", 2)[0], 2.0, *shipment("a", 2)[2:]], "int"),
        ([*shipment("a", 2)[:3], "late", 2.0], "numbers"),
    ],
)
def test_a_malformed_shipment_message_is_refused_whole(ledger_path, shipped, complaint):
    """The scheduler checks the fields of a shipment's message as it takes it."""
    record = Record(ledger=Ledger(ledger_path))
    with pytest.raises(ValueError, match=complaint):
        record.worker_transitions("tcp://w:1", shipped)
    assert record.worker_transitions("tcp://w:1", shipment("a", 2)) == 2
    assert [r.stimulus_id for r in record.story_records("a")] == ["w0", "w1"]
    record.close()


@pytest.mark.parametrize(
    ("columns", "count", "complaint"),
    [
        ("not columns", 2, "columns"),
        (shipped_columns("a", 2)[:5], 2, "columns"),
        ([["a"], *shipped_columns("a", 2)[1:]], 2, "length"),
        ([[1, 2], *shipped_columns("a", 2)[1:]], 2, "str"),
        ([*shipped_columns("a", 2)[:5], ["late", "later"]], 2, "numbers"),
        ([*shipped_columns("a", 2)[:3], [{}, None], *shipped_columns("a", 2)[4:]], 2, "dicts"),
        (
            [*shipped_columns("a", 2)[:3], [{}, {"b": 1}], *shipped_columns("a", 2)[4:]],
            2,
            "str to str",
        ),
        (
            [*shipped_columns("a", 2)[:3], [{}, {2: "x"}], *shipped_columns("a", 2)[4:]],
            2,
            "str to str",
        ),
        (shipped_columns("a", 2), 3, "not 3 as announced"),
    ],
)
def test_malformed_shipped_transitions_are_skipped_where_they_are_read(
    ledger_path, columns, count, complaint, caplog
):
    """The scheduler stores a shipment without unpacking it: transitions that are not as they
    should be are found where the block is read, skipped with a WARNING naming the worker,
    and reported by ``storied ledger check``; the shipments around them read as ever."""
    record = Record(ledger=Ledger(ledger_path))
    assert record.worker_transitions("tcp://w:1", shipment("a", 2)) == 2
    bad = [pack_block(columns), count, "a", 1.0, 2.0]
    assert record.worker_transitions("tcp://bad:1", bad) == count
    assert record.worker_transitions("tcp://w:1", shipment("a", 1, first_time=3.0)) == 1
    with caplog.at_level(logging.WARNING, logger="storied.record"):
        story = record.story_records("a")
    assert [(r.where, r.stimulus_id) for r in story] == [("tcp://w:1", f"w{n}") for n in (0, 1, 0)]
    assert any("'tcp://bad:1'" in m and complaint in m for m in caplog.messages)
    record.close()
    assert any(
        "does not decode" in problem and complaint in problem for problem in check(ledger_path)
    )


def test_without_a_ledger_shipped_transitions_are_checked_but_not_kept():
    record = Record()
    assert record.worker_transitions("tcp://w:1", shipment("a", 2)) == 0
    assert record.story_records("a") == []
    with pytest.raises(ValueError):
        record.worker_transitions("tcp://w:1", "not a shipment")


def test_events_logs_and_executions_in_memory():
    record = Record(events_per_topic=2, log_length=2)
    for number in range(3):
        record.event(["runtimes"], {"n": number}, "tcp://w:1", timestamp=float(number))
    stamp = record.event(["a", "b"], "x", "scheduler")
    assert record.events("runtimes") == ((1.0, {"n": 1}), (2.0, {"n": 2}))
    assert record.events() == {
        "runtimes": ((1.0, {"n": 1}), (2.0, {"n": 2})),
        "a": ((stamp, "x"),),
        "b": ((stamp, "x"),),
    }
    assert record.events("a", detail=True)[0].source == "scheduler"
    assert record.event_counts() == {"runtimes": 3, "a": 1, "b": 1}

    logger = logging.getLogger("storied.test.record")
    logger.addHandler(record.log_handler())
    try:
        logger.warning("first")
        logger.error("second")
    finally:
        logger.removeHandler(record.log_handler())
    assert [level for level, _ in record.logs()] == ["ERROR", "WARNING"]

    record.execution("k", "tcp://w:1", 3, 1.0, 2.0, "memory")
    assert record.executions()[0]["outcome"] == "memory"


def test_story_comes_back_whole_from_memory_and_disk(ledger_path):
    record = Record(transition_log_length=4, ledger=Ledger(ledger_path))
    assert record.run_id == 1
    for number in range(10):
        run_task(record, f"k{number}")
        record.flush()  # the writer reads the tiny log before it wraps
    assert len(record.story_records("k0", "k9")) == 6
    story = record.story("k0")
    assert [(start, finish) for _, start, finish, _, _ in story] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
    ]
    records = record.story_records("k3", "k9", where=None)
    assert [r.seq for r in records] == sorted({r.seq for r in records}) and len(records) == 6
    assert len(record.transitions(finish="memory")) == 10
    assert [r.key for r in record.transitions(finish="memory", limit=2)] == ["k8", "k9"]
    record.close()


def test_a_new_run_on_the_same_file_sees_the_earlier_story(ledger_path):
    first = Record(ledger=Ledger(ledger_path), run_info={"address": "tcp://s:1"})
    run_task(first, "shared")
    first.event(["topic"], "from run one", "scheduler")
    first.close()

    second = Record(ledger=Ledger(ledger_path))
    assert second.run_id == 2
    run_task(second, "shared")
    stories = second.story("shared")
    assert len(stories) == 6
    assert [entry[4] for entry in stories] == sorted(entry[4] for entry in stories)
    assert second.events("topic")[0][1] == "from run one"
    assert second.event_counts() == {}
    second.close()
    runs = Ledger(ledger_path).runs()
    assert runs[0]["info"]["address"] == "tcp://s:1"
    assert all(run["ended"] is not None for run in runs)


def test_events_merge_memory_and_disk(ledger_path):
    record = Record(events_per_topic=2, ledger=Ledger(ledger_path))
    for number in range(5):
        record.event(["t", "u"], number, "scheduler", timestamp=float(number))
    assert [msg for _, msg in record.events("t")] == [0, 1, 2, 3, 4]
    everything = record.events()
    assert set(everything) == {"t", "u"} and len(everything["u"]) == 5
    detail = record.events("u", detail=True)
    assert [rec.topic for rec in detail] == ["u"] * 5
    assert record.event_counts() == {"t": 5, "u": 5}
    record.close()


def test_logs_and_executions_reach_the_ledger_and_close_stops_writing(ledger_path):
    ledger = Ledger(ledger_path)
    record = Record(ledger=ledger)
    logger = logging.getLogger("storied.test.record.ledger")
    logger.addHandler(record.log_handler())
    try:
        logger.warning("persist me")
        record.execution("k", "tcp://w:1", 3, 1.0, 2.0, "erred")
        record.close()
        logger.warning("after close")
    finally:
        logger.removeHandler(record.log_handler())
    assert [entry.message for entry in ledger.logs()] == ["persist me"]
    assert ledger.executions()[0]["outcome"] == "erred"
    record.transition("late", "released", "waiting", {}, "s")  # memory only after close
    assert len(record.story("late")) == 1
    assert ledger.dropped == 0
