from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

from storied.record.events import EventRecord, pack_msg
from storied.record.ledger import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    Ledger,
    LedgerError,
    name_tokens,
    names_query,
    transition_block,
)
from storied.record.logcapture import LogRecordEntry
from storied.record.recovery import recover
from storied.record.transitions import TransitionLog, TransitionRecord
from tests.record.old_versions import make_version_6


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "history.db"


STORY = [
    ("x", "released", "waiting", {"x": "processing"}, "graph"),
    ("x", "waiting", "processing", {}, "plan"),
    ("y", "released", "waiting", {"x": "memory"}, "graph"),
    ("x", "processing", "memory", {}, "done"),
]


def append_story(log: TransitionLog, timestamp: float = 100.0) -> list[TransitionRecord]:
    """Four transitions, one a second from ``timestamp``; their records."""
    return [
        TransitionRecord.from_entry(
            log.append(key, start, finish, dict(recs), stimulus, timestamp=timestamp + offset), recs
        )
        for offset, (key, start, finish, recs, stimulus) in enumerate(STORY)
    ]


def write_story(ledger: Ledger, run_id: int, first_seq: int, timestamp: float = 100.0):
    """The four transitions of a log that ``ledger`` follows; their records."""
    log = TransitionLog(100, seq=iter(range(first_seq, first_seq + 100)))
    ledger.follow(run_id, log)
    return append_story(log, timestamp)


def put_event(ledger: Ledger, run_id: int, rec: EventRecord) -> None:
    ledger.put_event(run_id, rec.topic, (rec.seq, rec.timestamp, pack_msg(rec.msg), rec.source))


def test_write_flush_and_read_back(path):
    ledger = Ledger(path)
    run_id = ledger.start_run({"address": "tcp://s:1"})
    records = write_story(ledger, run_id, ledger.first_seq(run_id))
    put_event(ledger, run_id, EventRecord(900, "runtimes", 5.0, {"b": b"\x00", "t": (1,)}, "w"))
    ledger.put_execution(run_id, "x", "tcp://w:1", 7, 10.0, 10.5, "memory")
    entry = LogRecordEntry(6.0, "WARNING", 30, "storied.scheduler", "careful", "scheduler")
    ledger.put_log(run_id, entry)
    ledger.flush()

    assert ledger.story("x") == records
    assert ledger.story("graph") == [records[0], records[2]]
    assert ledger.story("x", run_id=run_id + 1) == []
    assert ledger.story("x", max_seq=records[2].seq) == records[:2]
    assert ledger.transitions(keys=["x"], finish="memory") == [records[3]]
    assert ledger.transitions(since=101.0, until=103.0) == records[1:3]
    assert ledger.transitions(limit=2) == records[2:]
    (event,) = ledger.events("runtimes")
    assert event == EventRecord(900, "runtimes", 5.0, {"b": b"\x00", "t": [1]}, "w")
    assert ledger.events("other") == []
    assert ledger.logs(level="WARNING") == [entry]
    assert ledger.logs(level="ERROR") == [] and ledger.logs(where="tcp://w:1") == []
    assert ledger.executions() == [
        {
            "run_id": run_id,
            "key": "x",
            "worker": "tcp://w:1",
            "thread": 7,
            "start": 10.0,
            "stop": 10.5,
            "outcome": "memory",
            **dict.fromkeys(("attempt", "exception_type", "message", "traceback")),
        }
    ]
    (run,) = ledger.runs()
    assert run["info"] == {"address": "tcp://s:1"} and run["ended"] is None
    ledger.close()
    assert ledger.runs()[0]["ended"] is not None
    assert not any(t.name.startswith("storied-ledger") for t in threading.enumerate())


def test_reopen_reads_earlier_runs_and_seqs_continue(path):
    first = Ledger(path)
    run_one = first.start_run({})
    old = write_story(first, run_one, first.first_seq(run_one))
    first.close()

    second = Ledger(path)
    run_two = second.start_run({})
    assert run_two == run_one + 1
    assert second.first_seq(run_two) == old[-1].seq + 1
    new = write_story(second, run_two, second.first_seq(run_two), timestamp=200.0)
    second.close()

    reader = Ledger(path)  # a fresh object that never writes
    assert reader.story("x") == old + new
    assert reader.story("x", run_id=run_one) == old
    assert [run["run_id"] for run in reader.runs()] == [run_one, run_two]


def test_one_ledger_object_can_start_a_run_after_closing(path):
    ledger = Ledger(path)
    first = ledger.start_run({})
    ledger.close()
    second = ledger.start_run({})
    records = write_story(ledger, second, ledger.first_seq(second))
    ledger.close()
    assert ledger.story("x", run_id=second) == records
    assert [run["run_id"] for run in ledger.runs()] == [first, second]
    assert ledger.dropped == 0


def test_a_full_queue_drops_counts_and_warns_without_blocking(path, caplog):
    ledger = Ledger(path, queue_size=5, batch_size=1_000, flush_interval=30)
    run_id = ledger.start_run({})
    events = [EventRecord(seq, "t", 1.0, seq, "w") for seq in range(1, 9)]
    started = time.monotonic()
    for rec in events:
        put_event(ledger, run_id, rec)
    assert time.monotonic() - started < 0.5
    assert ledger.dropped == len(events) - 5 == 3
    with caplog.at_level(logging.WARNING, logger="storied.record"):
        ledger.close()
    assert ledger.events("t") == events[:5]
    (warning,) = [r for r in caplog.records if r.name == "storied.record"]
    assert f"dropped {ledger.dropped} records" in warning.getMessage()
    put_event(ledger, run_id, events[0])  # after close: counted, not silently lost
    assert ledger.dropped == 4


def test_a_dropped_shipment_counts_every_transition_in_it(path):
    ledger = Ledger(path, queue_size=1, flush_interval=30)
    run_id = ledger.start_run({})
    put_event(ledger, run_id, EventRecord(1, "t", 1.0, 1, "w"))  # fills the queue
    shipment = [(seq, "x", "released", "waiting", "s", 1.0, "tcp://w:1", None) for seq in (2, 3)]
    ledger.put_transitions(run_id, shipment, [{}, {}])
    assert ledger.dropped == 2
    ledger.close()


def test_transitions_the_ring_overwrote_before_the_writer_read_them_are_counted(path, caplog):
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    log = TransitionLog(5, seq=iter(range(1, 100)))
    records = append_story(log) + append_story(log, timestamp=200.0)
    ledger.follow(run_id, log)  # late: the ring has wrapped already
    with caplog.at_level(logging.WARNING, logger="storied.record"):
        ledger.close()
    # three overwritten, and the oldest still in the full ring, which an append could be
    # overwriting as the writer reads: the writer cannot tell, so it counts that one as lost too
    assert ledger.dropped == 4
    assert ledger.transitions() == records[4:]
    (warning,) = [r for r in caplog.records if r.name == "storied.record"]
    assert "dropped 4 records" in warning.getMessage()


def test_following_needs_an_open_run(path):
    ledger = Ledger(path)
    with pytest.raises(LedgerError, match="follow after start_run"):
        ledger.follow(1, TransitionLog(10))
    run_id = ledger.start_run({})
    ledger.close()
    with pytest.raises(LedgerError, match=f"run {run_id} is not open"):
        ledger.follow(run_id, TransitionLog(10))


def test_a_half_full_ring_wakes_the_writer_before_its_interval(path):
    ledger = Ledger(path, flush_interval=60)
    run_id = ledger.start_run({})
    log = TransitionLog(8, seq=iter(range(1, 100)))
    ledger.follow(run_id, log)
    records = append_story(log)
    wait_until(lambda: len(ledger.transitions()) == len(records))
    assert ledger.transitions() == records
    ledger.close()
    assert ledger.dropped == 0


def test_the_writer_keeps_up_with_a_log_appended_to_while_it_reads(path):
    ledger = Ledger(path, flush_interval=0.001)
    run_id = ledger.start_run({})
    log = TransitionLog(50_000, seq=iter(range(1, 10**6)))
    ledger.follow(run_id, log)
    appended = [append_story(log, timestamp=float(n)) for n in range(5_000)]
    ledger.close()
    assert ledger.dropped == 0
    assert ledger.transitions() == [rec for story in appended for rec in story]


def test_retention_deletes_old_records_in_the_writer(path):
    ledger = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    run_id = ledger.start_run({})
    now = time.time()
    old = write_story(ledger, run_id, 1, timestamp=now - 7200)
    fresh = write_story(ledger, run_id, 10, timestamp=now)
    put_event(ledger, run_id, EventRecord(50, "t", now - 7200, "old", "scheduler"))
    put_event(ledger, run_id, EventRecord(51, "t", now, "new", "scheduler"))
    ledger.put_execution(run_id, "x", "w", 1, now - 7200, now - 7199, "memory")
    ledger.flush()
    wait_until(lambda: ledger.story("x") == fresh)
    wait_until(lambda: [e.msg for e in ledger.events("t")] == ["new"])
    wait_until(lambda: ledger.executions() == [])
    ledger.close()
    with sqlite3.connect(path) as conn:
        (orphans,) = conn.execute(
            "SELECT count(*) FROM block_names "
            "WHERE rowid NOT IN (SELECT block_id FROM transition_blocks)"
        ).fetchone()
        (unnamed,) = conn.execute(
            "SELECT count(*) FROM transition_blocks "
            "WHERE block_id NOT IN (SELECT rowid FROM block_names)"
        ).fetchone()
    assert orphans == unnamed == 0
    assert old[0] not in ledger.story("graph")


def test_schema_is_versioned_and_checked(path, tmp_path):
    ledger = Ledger(path)
    ledger.start_run({})
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
        conn.execute("UPDATE meta SET value = '99'")
    with pytest.raises(LedgerError, match="version 99"):
        Ledger(path).runs()
    with pytest.raises(LedgerError, match="version 99"):
        Ledger(path).start_run({})
    with pytest.raises(FileNotFoundError):
        Ledger(tmp_path / "missing.db").runs()
    not_a_ledger = tmp_path / "other.db"
    sqlite3.connect(not_a_ledger).close()
    not_a_ledger.write_bytes(b"")
    with pytest.raises(LedgerError, match="not a storied ledger"):
        Ledger(not_a_ledger).runs()


def test_new_files_take_large_pages_and_older_files_keep_theirs(path, tmp_path):
    ledger = Ledger(path)
    ledger.start_run({})
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA page_size").fetchone() == (PAGE_SIZE,) == (32_768,)
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=WAL")
    ledger = Ledger(older)
    run_id = ledger.start_run({})
    written = write_story(ledger, run_id, ledger.first_seq(run_id))
    ledger.close()
    with sqlite3.connect(older) as conn:
        assert conn.execute("PRAGMA page_size").fetchone() == (4096,)
    assert Ledger(older).story("graph") == [written[0], written[2]]


def test_story_query_uses_the_name_index(path):
    ledger = Ledger(path)
    ledger.start_run({})
    ledger.close()
    with sqlite3.connect(path) as conn:
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT entries FROM transition_blocks WHERE block_id IN "
                "(SELECT rowid FROM block_names WHERE block_names MATCH ?)",
                (names_query(["x"]),),
            )
        )
    assert "SCAN transition_blocks" not in plan
    assert "VIRTUAL TABLE INDEX" in plan


def test_names_sharing_a_token_do_not_leak_into_each_others_stories(path):
    """The index folds case and splits names at NUL and its separator: readers compare the
    names themselves, and a name with no token at all is found by reading every block."""
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    seq = ledger.first_seq(run_id)
    names = ["Key", "key", "a\x1fb", "a", "", "nul\x00b", "('x', 1)", 'quo"te', "\x1f"]
    entries = [
        (seq + offset, name, "a", "b", "stimulus", 1.0, "scheduler", None)
        for offset, name in enumerate(names)
    ]
    ledger.put_transitions(run_id, entries, [{} for _ in names])
    ledger.close()
    for name in names:
        assert [rec.key for rec in ledger.story(name)] == [name]
    assert ledger.story("nothing-logged") == []


def test_limit_keeps_the_newest_across_blocks(path):
    ledger = Ledger(path)  # each followed log's transitions make blocks of their own
    run_id = ledger.start_run({})
    records = [
        *write_story(ledger, run_id, 1),
        *write_story(ledger, run_id, 10, timestamp=200.0),
    ]
    for seq in range(20, 30):
        put_event(ledger, run_id, EventRecord(seq, "t", float(seq), seq, "scheduler"))
        ledger.flush()  # one block per event
    ledger.close()
    assert ledger.transitions(limit=5) == records[-5:]
    assert ledger.transitions(since=150.0, limit=2) == records[-2:]
    assert ledger.transitions(keys=["x"], limit=1) == [records[-1]]
    assert [e.msg for e in ledger.events("t", limit=3)] == [27, 28, 29]
    assert [e.msg for e in ledger.events(after_seq=26, limit=10)] == [27, 28, 29]
    assert [e.msg for e in ledger.events(since=21.0, until=23.0)] == [21, 22]
    assert ledger.transitions(limit=0) == []


def make_version_5(path) -> None:
    """Turn a ledger into what version 5 wrote: blocks indexed under CRC-32 tokens of their
    names in ``transition_names`` (which kept a copy of the tokens), no ``block_names``."""
    make_version_6(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE block_names")
        conn.execute("CREATE VIRTUAL TABLE transition_names USING fts5 (tokens, detail = none)")
        for block_id, blob in conn.execute("SELECT block_id, entries FROM transition_blocks"):
            names = set()
            for entry, recommendations in transition_block(blob):
                names.update([entry[1], entry[4], *recommendations])
            conn.execute(
                "INSERT INTO transition_names (rowid, tokens) VALUES (?, ?)",
                (block_id, " ".join(name_tokens(names))),
            )
        conn.execute("UPDATE meta SET value = '5' WHERE name = 'schema_version'")


def test_version_5_ledgers_are_read_upgraded_pruned_and_recovered(path, tmp_path):
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    old = write_story(ledger, run_id, ledger.first_seq(run_id), timestamp=time.time() - 7200)
    ledger.close()
    make_version_5(path)
    assert Ledger(path).story("x") == [old[0], old[1], old[2], old[3]]
    recovered = recover(path, tmp_path / "recovered.db")
    assert recovered.complete
    assert Ledger(tmp_path / "recovered.db").story("y") == [old[2]]
    with sqlite3.connect(tmp_path / "recovered.db") as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)

    writer = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    run_id = writer.start_run({})
    new = write_story(writer, run_id, writer.first_seq(run_id), timestamp=time.time())
    writer.flush()
    with sqlite3.connect(path) as conn:  # upgraded: new blocks go to the new index
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    wait_until(lambda: Ledger(path).story("x") == [new[0], new[1], new[2], new[3]])
    writer.close()  # the old run's blocks were pruned from the old index, the new ones stay
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM transition_names").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM block_names").fetchone() == (1,)
    assert Ledger(path).story("plan") == [new[1]]


def put_executions(ledger: Ledger, run_id: int, keys: list[str], stop: float) -> None:
    for number, key in enumerate(keys, start=int(stop)):
        ledger.put_execution(run_id, key, "tcp://w:1", 1, number - 1, number, "memory")


def test_a_batch_of_executions_is_one_row_and_version_6_rows_still_read(path, tmp_path):
    ledger = Ledger(path)
    old_run = ledger.start_run({})
    put_executions(ledger, old_run, ["a", "b"], 1000.0)
    ledger.close()
    make_version_6(path)
    assert [e["key"] for e in Ledger(path).executions()] == ["a", "b"]

    ledger = Ledger(path)  # writing upgrades the file; the old rows stay where they are
    new_run = ledger.start_run({})
    put_executions(ledger, new_run, ["c", "d", "e"], 2000.0)
    ledger.put_failure(
        new_run,
        {
            "key": "d",
            "stimulus_id": "task-erred-1",
            "timestamp": 2001.5,
            "outcome": "erred",
            "attempt": 1,
            "worker": "tcp://w:1",
            "start": 2000.0,
            "stop": 2001.0,
            "exception_type": "ValueError",
            "message": "boom",
            "traceback": "Traceback ...",
            "blame": None,
        },
    )
    ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM execution_blocks").fetchone() == (1,)
    reader = Ledger(path)
    executed = reader.executions()
    assert [(e["run_id"], e["key"]) for e in executed] == [
        (old_run, "a"),
        (old_run, "b"),
        (new_run, "c"),
        (new_run, "d"),
        (new_run, "e"),
    ]
    assert executed[3]["exception_type"] == "ValueError" and executed[3]["attempt"] == 1
    assert executed[2]["exception_type"] is None
    assert [e["key"] for e in reader.executions(limit=4)] == ["b", "c", "d", "e"]
    assert [e["key"] for e in reader.executions(run_id=old_run, limit=1)] == ["b"]
    assert reader.execution_outcomes(new_run)[0] == ("c", "tcp://w:1", 1999.0, 2000.0, "memory")
    summaries = {run["run_id"]: run for run in reader.run_summaries()}
    assert (summaries[old_run]["tasks"], summaries[new_run]["executions"]) == (2, 3)
    assert summaries[new_run]["workers"] == 1
    page = reader.task_page(new_run, 0, 10)[1]
    assert [(task["key"], task["executed"], task["duration"]) for task in page] == [
        ("c", 1, 1.0),
        ("d", 1, 1.0),
        ("e", 1, 1.0),
    ]
    recovered = recover(path, tmp_path / "recovered.db")
    assert recovered.complete
    assert Ledger(tmp_path / "recovered.db").executions() == executed


def test_retention_keeps_the_newer_executions_of_a_block_that_straddles_the_cutoff(path):
    ledger = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    run_id = ledger.start_run({})
    now = time.time()
    ledger.put_execution(run_id, "old", "tcp://w:1", 1, now - 7201, now - 7200, "memory")
    ledger.put_execution(run_id, "new", "tcp://w:1", 1, now - 1, now, "erred")
    ledger.flush()
    wait_until(lambda: [e["key"] for e in ledger.executions()] == ["new"])
    ledger.close()
    [kept] = Ledger(path).executions()
    assert (kept["start"], kept["stop"], kept["outcome"]) == (now - 1, now, "erred")


def test_a_steady_stream_is_written_a_batch_per_flush_interval(path):
    """Records that keep coming are committed every flush interval, not one small transaction
    after another as fast as they come (each costs a commit and an index segment)."""
    ledger = Ledger(path, flush_interval=0.2, batch_size=1_000_000)
    run_id = ledger.start_run({})
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 1.0:  # a batch's events of a topic are one block
        put_event(ledger, run_id, EventRecord(run_id + sent, "t", 1.0, sent, "scheduler"))
        sent += 1
        if sent % 20 == 0:
            time.sleep(0.001)
    ledger.flush()
    with sqlite3.connect(path) as conn:
        (batches,) = conn.execute("SELECT count(*) FROM event_blocks").fetchone()
    assert 2 <= batches <= 10
    assert len(ledger.events("t")) == sent
    ledger.close()


def test_a_flush_or_close_does_not_wait_for_the_flush_interval(path):
    ledger = Ledger(path, flush_interval=30)
    run_id = ledger.start_run({})
    ledger.put_execution(run_id, "x", "tcp://w:1", 1, 1.0, 2.0, "memory")
    started = time.monotonic()
    ledger.flush()
    assert [e["key"] for e in ledger.executions()] == ["x"]
    ledger.put_execution(run_id, "y", "tcp://w:1", 1, 1.0, 2.0, "memory")
    ledger.close()
    assert time.monotonic() - started < 5
    assert [e["key"] for e in Ledger(path).executions()] == ["x", "y"]


def test_executions_past_the_queue_size_are_dropped_and_counted(path):
    """Executions go to a list of their run's, bounded like the queue, not one item each."""
    ledger = Ledger(path, queue_size=3, flush_interval=3600)
    run_id = ledger.start_run({})
    ledger.flush()  # the writer now sleeps until woken
    for n in range(5):
        ledger.put_execution(run_id, f"t-{n}", "tcp://w:1", 1, 1.0, 2.0, "memory")
    assert ledger.dropped == 2
    ledger.flush()
    assert [e["key"] for e in ledger.executions()] == ["t-0", "t-1", "t-2"]
    ledger.close()
    ledger.put_execution(run_id, "late", "tcp://w:1", 1, 1.0, 2.0, "memory")
    assert ledger.dropped == 3
