"""Task executions in the ledger: blocks of columns, one row per run per batch.

An execution a task was a row of its own until schema version 7, and inserting it (eight
parameters bound in Python, two indexes) cost the writer more than packing a thousand
transitions. Now a batch's executions of one run are one row: their fields as columns, packed
and compressed like transition blocks. Rows written before stay in ``executions`` and are
read as ever, ahead of the blocks (a file's runs follow one another).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from storied.record.blocks import pack_block, tables_named, unpack_block

#: what schema version 7 adds to version 6
EXECUTION_BLOCKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS execution_blocks (
    block_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    first_stop REAL NOT NULL,
    last_stop REAL NOT NULL,
    entries BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_blocks_by_run ON execution_blocks (run_id);
CREATE INDEX IF NOT EXISTS execution_blocks_by_stop ON execution_blocks (first_stop);
"""

#: an execution's fields, the columns of a block, in this order
EXECUTION_FIELDS = ("key", "worker", "thread", "start", "stop", "outcome")
#: an ``execution_blocks`` row but its id
EXECUTION_BLOCK_COLUMNS = ("run_id", "first_stop", "last_stop", "entries")
_FIELD_GETTERS = [itemgetter(index) for index in range(len(EXECUTION_FIELDS))]
_STOP = EXECUTION_FIELDS.index("stop")


def execution_block_row(run_id: int, executions: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
    """The row of one run's ``executions`` (tuples of ``EXECUTION_FIELDS``, in the order
    recorded): a pass in C per field, no Python code per execution."""
    columns = [list(map(field, executions)) for field in _FIELD_GETTERS]
    stops = columns[_STOP]
    return (run_id, min(stops), max(stops), pack_block(columns))


def block_executions(blob: bytes) -> list[tuple[Any, ...]]:
    """A block's executions, as tuples of ``EXECUTION_FIELDS``."""
    return list(zip(*unpack_block(blob), strict=True))


def execution_rows(
    conn: sqlite3.Connection, run_id: int | None = None, limit: int | None = None
) -> list[tuple[Any, ...]]:
    """``(run_id, *EXECUTION_FIELDS)`` of every execution (of run ``run_id``), in the order
    recorded; with ``limit``, the newest that many, reading blocks newest first only until it
    has them."""
    where, params = ("WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
    newest_first: list[list[tuple[Any, ...]]] = []
    found = 0
    if tables_named(conn, "execution_blocks"):
        for run, blob in conn.execute(
            f"SELECT run_id, entries FROM execution_blocks {where} ORDER BY block_id DESC", params
        ):
            if limit is not None and found >= limit:
                break
            columns = unpack_block(blob)
            newest_first.append(list(zip(repeat(run), *columns, strict=False)))
            found += len(columns[0])
    older: list[tuple[Any, ...]] = []
    if limit is None or found < limit:  # rows written before version 7
        sql = f"SELECT run_id, {', '.join(EXECUTION_FIELDS)} FROM executions {where}"
        if limit is None:
            older = conn.execute(sql + " ORDER BY id", params).fetchall()
        else:
            older = conn.execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit - found])
            older = older.fetchall()[::-1]
    rows = older + [row for block in reversed(newest_first) for row in block]
    return rows if limit is None else rows[max(len(rows) - limit, 0) :]


def execution_counts(conn: sqlite3.Connection) -> dict[int, tuple[int, int, int, float | None]]:
    """Per run: ``(tasks, executions, workers, last_stop)``, distinct keys and workers that
    ran; a block at a time, so a file of millions of executions is never held whole."""
    counts: dict[int, tuple[int, int, int, float | None]] = {}
    for run_id, tasks, executions, workers, last_stop in conn.execute(
        "SELECT run_id, count(DISTINCT key), count(*), count(DISTINCT worker), max(stop) "
        "FROM executions GROUP BY run_id"
    ):  # rows written before version 7: a run's executions are all rows or all blocks
        counts[run_id] = (tasks, executions, workers, last_stop)
    if not tables_named(conn, "execution_blocks"):
        return counts
    keys: dict[int, set[str]] = {}
    workers_of: dict[int, set[str]] = {}
    executed: dict[int, int] = {}
    stops: dict[int, float] = {}
    for run_id, last_stop, blob in conn.execute(
        "SELECT run_id, last_stop, entries FROM execution_blocks ORDER BY block_id"
    ):
        columns = unpack_block(blob)
        keys.setdefault(run_id, set()).update(columns[0])
        workers_of.setdefault(run_id, set()).update(columns[1])
        executed[run_id] = executed.get(run_id, 0) + len(columns[0])
        stops[run_id] = max(stops.get(run_id, last_stop), last_stop)
    for run_id, run_keys in keys.items():
        counts[run_id] = (len(run_keys), executed[run_id], len(workers_of[run_id]), stops[run_id])
    return counts
