"""How the ledger writes: compressed blocks (older plain ones still read) and batched inserts."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

from storied.record import Ledger, Record
from storied.record.events import pack_msg
from storied.record.ledger import (
    NAMES_INDEX_OPTIONS,
    NAMES_INDEX_SCHEMA,
    SCHEMA_VERSION,
    _insert_rows,
    _names_of,
    names_query,
    pack_block,
    unpack_block,
)
from storied.record.recovery import check
from storied.record.shipments import pack_shipment


def test_blocks_are_compressed_and_plain_msgpack_blocks_still_read(tmp_path):
    path = tmp_path / "ledger.db"
    record = Record(ledger=Ledger(path))
    for i in range(300):
        record.transition(f"inc-{i}", "released", "waiting", {}, "update-graph-1")
        record.transition(f"inc-{i}", "waiting", "memory", {}, f"task-finished-{i}")
    record.event(["ops"], {"n": 1}, "scheduler")
    record.close()
    story = Ledger(path).story("inc-7")
    events = Ledger(path).events("ops")
    assert [rec.finish for rec in story] == ["waiting", "memory"] and len(events) == 1
    with closing(sqlite3.connect(path)) as conn:
        for table in ("transition_blocks", "event_blocks"):
            blocks = conn.execute(f"SELECT block_id, entries FROM {table}").fetchall()
            plain = [(pack_msg(unpack_block(blob)), block_id) for block_id, blob in blocks]
            assert all(blob[:1] == b"L" for _, blob in blocks)
            if table == "transition_blocks":  # names repeat: a third of the bytes or less
                assert sum(len(blob) for _, blob in blocks) * 3 < sum(len(p) for p, _ in plain)
            # as storied wrote them before blocks were compressed
            conn.executemany(f"UPDATE {table} SET entries = ? WHERE block_id = ?", plain)
        conn.commit()
    assert Ledger(path).story("inc-7") == story
    assert Ledger(path).events("ops") == events


def test_rows_go_in_as_few_statements_as_the_parameter_limit_allows(tmp_path):
    with closing(sqlite3.connect(tmp_path / "rows.db", isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b REAL)")
        conn.execute("INSERT INTO t (a, b) VALUES ('first', 0)")
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 7)  # three rows a statement
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        rows = [(f"row-{i}", i / 3) for i in range(8)]
        ids = _insert_rows(conn, "t", ("a", "b"), rows)
        conn.set_trace_callback(None)
        assert len(statements) == 3
        assert ids == list(range(2, 10))
        assert conn.execute("SELECT id, a, b FROM t WHERE id > 1").fetchall() == [
            (id_, a, b) for id_, (a, b) in zip(ids, rows, strict=True)
        ]
        assert _insert_rows(conn, "t", ("a", "b"), []) == []


def test_transition_blocks_hold_columns_and_blocks_of_pairs_still_read(tmp_path):
    path = tmp_path / "ledger.db"
    record = Record(ledger=Ledger(path))
    run_id = record.run_id
    for i in range(50):
        record.transition(f"inc-{i}", "released", "waiting", {f"sum-{i}": "waiting"}, "graph")
        record.transition(f"inc-{i}", "waiting", "memory", {}, f"task-finished-{i}")
    record.worker_transitions(
        "tcp://w:1",
        pack_shipment([["inc-7"], ["ready"], ["executing"], [{}], ["compute-7"], [5.0]]),
    )
    record.close()
    ledger = Ledger(path)
    story, outcomes = ledger.story("inc-7"), ledger.scheduler_outcomes(run_id)
    assert [(rec.where, rec.finish) for rec in story] == [
        ("scheduler", "waiting"),
        ("scheduler", "memory"),
        ("tcp://w:1", "executing"),
    ]
    assert outcomes["inc-3"] == "memory" and "sum-7" not in outcomes
    with closing(sqlite3.connect(path)) as conn:
        blocks = conn.execute("SELECT block_id, entries FROM transition_blocks").fetchall()
        unpacked = [(unpack_block(blob), block_id) for block_id, blob in blocks]
        shipped = [block for block, _ in unpacked if "shipped" in block]
        assert [(block["where"], block["count"]) for block in shipped] == [("tcp://w:1", 1)]
        written = [block for block, _ in unpacked if "shipped" not in block]
        block_ids = [block_id for block, block_id in unpacked if "shipped" not in block]
        assert all(sorted(block) == ["columns", "recommendations"] for block in written)
        assert all(len(block["columns"]) == 8 for block in written)
        pairs = [  # as version 5 and before wrote them: [entry, recommendations] a transition
            (
                pack_block(
                    [
                        [list(entry), recommendations]
                        for entry, recommendations in zip(
                            zip(*block["columns"], strict=True),
                            block["recommendations"],
                            strict=True,
                        )
                    ]
                ),
                block_id,
            )
            for block, block_id in zip(written, block_ids, strict=True)
        ]
        conn.executemany("UPDATE transition_blocks SET entries = ? WHERE block_id = ?", pairs)
        conn.commit()
    assert ledger.story("inc-7") == story
    assert ledger.story("sum-7") == [rec for rec in story if "sum-7" in rec.recommendations]
    assert ledger.scheduler_outcomes(run_id) == outcomes


def test_a_block_indexes_each_name_once():
    keys = ["x", "y", "x", "x"]
    stimulus_ids = ["graph", "graph", "done", "graph"]
    columns = [[1, 2, 3, 4], keys, [], [], stimulus_ids]
    recommendations = [{"y": "waiting"}, {"x": "memory", "z": "forgotten"}, {}, {}]
    names = _names_of(columns, recommendations).split("\x1f")
    assert sorted(names) == ["done", "graph", "x", "y", "z"]


def test_a_block_leaves_the_name_index_whatever_order_its_names_come_in(tmp_path):
    """Retention takes a block out by indexing its names again as a deletion, in a set's
    order, which differs between processes: the index keeps no positions, so any order does."""
    with closing(sqlite3.connect(tmp_path / "names.db", isolation_level=None)) as conn:
        conn.execute(NAMES_INDEX_SCHEMA)
        insert = "INSERT INTO block_names (rowid, names) VALUES (?, ?)"
        conn.execute(insert, (1, "\x1f".join(["a-1", "b-2", "c-3"])))
        conn.execute(insert, (2, "\x1f".join(["b-2", "d-4"])))
        conn.execute(
            "INSERT INTO block_names (block_names, rowid, names) VALUES ('delete', ?, ?)",
            (1, "\x1f".join(["c-3", "a-1", "b-2"])),
        )
        conn.execute("INSERT INTO block_names (block_names, rank) VALUES ('integrity-check', 0)")

        def blocks(name: str) -> list[int]:
            query = "SELECT rowid FROM block_names WHERE block_names MATCH ?"
            return [row for (row,) in conn.execute(query, (names_query([name]),))]

        assert (blocks("a-1"), blocks("b-2"), blocks("c-3")) == ([], [2], [])


def test_every_file_a_writer_opens_merges_its_name_index_sixteen_segments_at_a_time(tmp_path):
    path = tmp_path / "ledger.db"
    Record(ledger=Ledger(path)).close()

    def options() -> dict[str, int]:
        with closing(sqlite3.connect(path)) as conn:
            return dict(conn.execute("SELECT k, v FROM block_names_config WHERE k != 'version'"))

    assert options() == dict(NAMES_INDEX_OPTIONS) == {"automerge": 16, "pgsz": 64_000}
    with closing(sqlite3.connect(path)) as conn:  # as a file written before this version
        conn.execute("DELETE FROM block_names_config WHERE k != 'version'")
        conn.commit()
    record = Record(ledger=Ledger(path))
    record.transition("x", "released", "waiting", {}, "graph")
    record.close()
    assert options() == dict(NAMES_INDEX_OPTIONS)
    assert [rec.finish for rec in Ledger(path).story("x")] == ["waiting"]


def test_a_version_7_file_reads_and_takes_packed_shipments_once_upgraded(tmp_path):
    """Version 7 stored a worker's transitions as columns the writer packed; version 8 stores
    the shipment as the worker packed it. Both read alike, and writing upgrades the file."""
    path = tmp_path / "ledger.db"
    old = Ledger(path)
    old_run = old.start_run({})
    shipped_then = [(10**9, "inc-1", "ready", "executing", "compute-1", 5.0, "tcp://w:1", None)]
    old.put_transitions(old_run, shipped_then, [{}])
    old.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = '7' WHERE name = 'schema_version'")
    assert [(r.where, r.finish) for r in Ledger(path).story("inc-1")] == [
        ("tcp://w:1", "executing")
    ]

    record = Record(ledger=Ledger(path))
    columns = [["inc-1"], ["executing"], ["memory"], [{"inc-2": "waiting"}], ["done-1"], [6.0]]
    assert record.worker_transitions("tcp://w:2", pack_shipment(columns)) == 1
    record.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    story = Ledger(path).story("inc-1")
    assert [(r.where, r.start, r.finish, r.timestamp) for r in story] == [
        ("tcp://w:1", "ready", "executing", 5.0),
        ("tcp://w:2", "executing", "memory", 6.0),
    ]
    assert Ledger(path).story("inc-2") == story[1:]  # named in a recommendation
    assert Ledger(path).story("done-1") == story[1:]  # by stimulus id
    assert check(path) == []


def test_retention_rewrites_a_shipped_block_and_keeps_the_name_index_sound(tmp_path):
    """A shipped block that straddles the cutoff leaves the name index under the names the
    worker listed (recomputed from its transitions) and comes back as a block of its newer
    transitions, as the writer's own blocks do."""
    path = tmp_path / "ledger.db"
    ledger = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    record = Record(ledger=ledger)
    now = time.time()
    columns = [
        ["old", "new"],
        ["ready", "ready"],
        ["executing", "executing"],
        [{"old-dependent": "waiting"}, {}],
        ["compute-old", "compute-new"],
        [now - 7200, now],
    ]
    record.worker_transitions("tcp://w:1", pack_shipment(columns))
    deadline = time.monotonic() + 10
    # committed (the new transition is on file) and pruned: an empty story alone may only
    # mean the shipment is not written yet
    while not ledger.story("compute-new") or ledger.story("compute-old"):
        assert time.monotonic() < deadline, "retention never pruned the old transition"
        time.sleep(0.02)
    record.close()
    reader = Ledger(path)
    assert [(r.key, r.where) for r in reader.story("new")] == [("new", "tcp://w:1")]
    assert reader.story("old") == reader.story("old-dependent") == []
    with closing(sqlite3.connect(path)) as conn:
        # the block keeps its id: names left in the index would still point at it
        for name in ("old", "old-dependent", "compute-old"):
            found = "SELECT rowid FROM block_names WHERE block_names MATCH ?"
            assert conn.execute(found, (f'"{name}"',)).fetchall() == []
        assert conn.execute(found, ('"compute-new"',)).fetchall() != []
        (entries,) = conn.execute("SELECT entries FROM transition_blocks").fetchone()
    assert "shipped" not in unpack_block(entries)
    assert check(path) == []
