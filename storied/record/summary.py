"""A run's tasks summed up when it ends, and stored.

Counting a finished run of a million tasks from its records takes a pass over three million
transitions and a million executions (a minute or two). When a run ends, the writer process
reads back its scheduler's transitions and its executions from their blocks and sums them up
in passes in C (each task's outcome on the scheduler, its runs and failures), and writes out
one ``run_tasks`` row per task, with ids in key order, and the run's counts in ``run_counts``.
A reader then answers pages, counts and key searches with indexed SQL. Runs that ended
without a summary (a crash, a ledger of schema version 4, a run of more than
``SUMMARY_MAX_TASKS`` tasks) have none, and readers count them from the records. A run that
outlived ``ledger.retain`` is summed up from what is still on file.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from itertools import compress, repeat
from operator import eq, itemgetter, sub
from typing import Any

from storied.record.blocks import tables_named
from storied.record.executions import execution_rows
from storied.record.keys import key_prefix

#: Tasks a run may have and still be summed up: 60 to 100 bytes each are in the writer's
#: memory while it does (a few hundred megabytes at this bound).
SUMMARY_MAX_TASKS = 4_000_000

#: States a task is let go to after it is done with (or when the cluster closes): a task's
#: outcome is the last state it was moved to other than these.
LET_GO = frozenset(("released", "forgotten"))

#: the tables ``SUMMARY_SCHEMA`` makes: all that schema version 5 adds to version 4
SUMMARY_TABLES = ("run_tasks", "run_counts")

SUMMARY_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_tasks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    prefix TEXT NOT NULL,
    state TEXT,
    executed INTEGER NOT NULL,
    erred INTEGER NOT NULL,
    worker TEXT,
    duration REAL
);
CREATE INDEX IF NOT EXISTS run_tasks_by_state ON run_tasks (run_id, state);
CREATE INDEX IF NOT EXISTS run_tasks_by_prefix ON run_tasks (run_id, prefix);
CREATE TABLE IF NOT EXISTS run_counts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    detail TEXT NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_counts_by_run ON run_counts (run_id);
"""

#: ``run_counts`` kinds: tasks in all (the summary's mark), the id of the run's first task
#: (a run's tasks have consecutive ids, in key order), executions by worker, by outcome, by
#: prefix and outcome, and tasks by prefix and state
TASKS, FIRST_ID, BY_WORKER, BY_OUTCOME, PREFIX_RUNS, PREFIX_STATES = (
    "tasks",
    "first-id",
    "worker",
    "outcome",
    "prefix-runs",
    "prefix-states",
)
#: the columns of a task's row, as readers get them
TASK_FIELDS = ("key", "prefix", "state", "executed", "erred", "worker", "duration")

_key_of = itemgetter(1)
_finish_of = itemgetter(3)


class _Held(dict[str, bool]):
    """Whether a task moved to a state is still held (not let go), by state: one lookup in C
    per transition, where testing ``LET_GO`` and negating took two more."""

    def __missing__(self, state: str) -> bool:
        held = self[state] = state not in LET_GO
        return held


_HELD = _Held()


class RunTally:
    """One run's tasks' outcomes on the scheduler, from its transitions in seq order.

    Made when the run ends (``storied.record.ledger``), as ``write`` sums up its executions:
    a run costs the writer no Python code per transition or execution while it runs."""

    def __init__(self) -> None:
        #: each key's last state on the scheduler that is not let go, and each key's last
        #: state (let go or not): the outcome is the first if there is one, else the second
        self._kept: dict[str, str] = {}
        self._last: dict[str, str] = {}

    def __len__(self) -> int:
        """The tasks tallied, counted in both dicts: what the tally's memory grows with."""
        return len(self._kept) + len(self._last)

    def outcomes(self) -> dict[str, str]:
        """Each key's outcome: its last state not let go, else its last."""
        return {**self._last, **self._kept}

    def add_scheduler_transitions(self, keys: Sequence[str], finishes: Sequence[str]) -> None:
        """The keys and finish states of transitions of the scheduler's log, in seq order;
        every step runs in C, two passes over them (a third, for the let-go states apart,
        cost a third more)."""
        self._last.update(zip(keys, finishes, strict=True))
        held = map(_HELD.__getitem__, finishes)
        self._kept.update(compress(zip(keys, finishes, strict=True), held))

    def write(self, conn: sqlite3.Connection, run_id: int) -> None:
        """Store the summary of ``run_id`` (in the caller's transaction, once its executions
        are inserted): its tasks, then its counts (by prefix summed in SQL; a task ran if it
        has a last worker)."""
        _, keys, workers, _, starts, stops, outcomes = _columns(execution_rows(conn, run_id))
        rows = self._rows(keys, workers, starts, stops, outcomes)
        (first,) = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM run_tasks").fetchone()
        conn.executemany(
            "INSERT INTO run_tasks (id, run_id, key, prefix, state, executed, erred, worker, "
            "duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ((n, run_id, *row) for n, row in enumerate(rows, first)),
        )
        counts: list[tuple[str, str, str, int]] = [
            (TASKS, "", "", len(rows)),
            (FIRST_ID, "", "", first),
        ]
        for kind, column in ((BY_WORKER, workers), (BY_OUTCOME, outcomes)):
            counts += ((kind, name, "", n) for name, n in Counter(column).items())
        conn.executemany(
            "INSERT INTO run_counts (run_id, kind, name, detail, count) VALUES (?, ?, ?, ?, ?)",
            ((run_id, *count) for count in counts),
        )
        this_run = "FROM run_tasks WHERE id >= ? AND id < ?"
        ids = (first, first + len(rows))
        for kind, detail, count, where in (
            (PREFIX_STATES, "state", "count(*)", "state IS NOT NULL"),
            (PREFIX_RUNS, "'memory'", "sum(executed)", "worker IS NOT NULL"),
            (PREFIX_RUNS, "'erred'", "sum(erred)", "worker IS NOT NULL"),
        ):
            conn.execute(
                "INSERT INTO run_counts (run_id, kind, name, detail, count) "
                f"SELECT ?, ?, prefix, {detail}, {count} {this_run} AND {where} "
                f"GROUP BY prefix, {detail}",
                (run_id, kind, *ids),
            )

    def _rows(
        self,
        keys: Sequence[str],
        workers: Sequence[str],
        starts: Sequence[float],
        stops: Sequence[float],
        outcomes: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        """``TASK_FIELDS`` of every task, in key order: its outcome tallied here, and from the
        run's executions (columns, in the order recorded) its runs and failures, and the worker
        and duration of the one recorded last."""
        states = self.outcomes()
        executed = Counter(compress(keys, map(eq, outcomes, repeat("memory"))))
        erred = Counter(compress(keys, map(eq, outcomes, repeat("erred"))))
        last = dict(zip(keys, zip(workers, map(sub, stops, starts), strict=True), strict=True))
        none = (None, None)
        return [
            (key, key_prefix(key), states.get(key), executed[key], erred[key], *last.get(key, none))
            for key in sorted(states.keys() | last.keys())
        ]


def _columns(rows: list[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """Execution rows (``run_id`` and ``EXECUTION_FIELDS``) as one sequence per field."""
    return list(zip(*rows, strict=True)) if rows else [()] * 7


def has_summary_tables(conn: sqlite3.Connection) -> bool:
    """Whether the file has the summary tables (a ledger of schema version 4 has not)."""
    return bool(tables_named(conn, "run_counts"))


def read_counts(conn: sqlite3.Connection, run_id: int) -> list[tuple[str, str, str, int]] | None:
    """The stored ``(kind, name, detail, count)`` of ``run_id``; None when it has no summary."""
    if not has_summary_tables(conn):
        return None
    found = conn.execute(
        "SELECT kind, name, detail, count FROM run_counts WHERE run_id = ?", (run_id,)
    ).fetchall()
    return found if any(kind == TASKS for kind, *_ in found) else None


def read_page(
    conn: sqlite3.Connection,
    run_id: int,
    offset: int,
    limit: int,
    prefix: str | None = None,
    state: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """How many tasks of ``run_id`` have ``prefix`` and/or ``state``, and those ``offset`` to
    ``offset + limit`` of them in key order."""
    columns = ", ".join(TASK_FIELDS)
    if prefix is None and state is None:  # a range of ids: as quick deep as near the top
        first, total = _first_and_total(conn, run_id)
        rows = conn.execute(
            f"SELECT {columns} FROM run_tasks WHERE id >= ? AND id < ? ORDER BY id",
            (first + offset, min(first + offset + limit, first + total)),
        ).fetchall()
    else:
        clauses, params = ["run_id = ?"], [run_id]
        for column, value in (("prefix", prefix), ("state", state)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        (total,) = conn.execute(f"SELECT count(*) FROM run_tasks WHERE {where}", params).fetchone()
        rows = conn.execute(
            f"SELECT {columns} FROM run_tasks WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    return total, [dict(zip(TASK_FIELDS, row, strict=True)) for row in rows]


def read_keys_from(conn: sqlite3.Connection, run_id: int, text: str, limit: int) -> list[str]:
    """Up to ``limit`` keys of ``run_id`` from ``text`` on, in key order.

    A run's ids are in key order, so the first is found by bisecting its ids (a score of
    lookups by id for a million tasks) rather than through an index of every key."""
    first, total = _first_and_total(conn, run_id)
    low, high = first, first + total
    while low < high:
        middle = (low + high) // 2
        (key,) = conn.execute("SELECT key FROM run_tasks WHERE id = ?", (middle,)).fetchone()
        if key < text:
            low = middle + 1
        else:
            high = middle
    return [
        key
        for (key,) in conn.execute(
            "SELECT key FROM run_tasks WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (low, first + total, limit),
        )
    ]


def _first_and_total(conn: sqlite3.Connection, run_id: int) -> tuple[int, int]:
    """The id of the first task of summed-up run ``run_id``, and how many tasks it has."""
    counted = dict(
        conn.execute(
            "SELECT kind, count FROM run_counts WHERE run_id = ? AND kind IN (?, ?)",
            (run_id, TASKS, FIRST_ID),
        ).fetchall()
    )
    return counted[FIRST_ID], counted[TASKS]
