"""Durable history in one SQLite file, written by a process of its own.

Nothing on the scheduler's hot path waits for the disk, and the SQLite work does not share the
scheduler's GIL: the scheduler's process spends a few microseconds a task on the ledger, the
writer process (``storied.record.writer``) the rest. In the scheduler's process, a background
thread gathers what is new every ``flush_interval`` (sooner when woken) and hands it over,
pickled: transitions, several per task, are not queued one by one (the thread reads the
scheduler's own straight out of the in-memory ``TransitionLog`` ring it follows, so recording
one costs the scheduler the same with a ledger as without, and those its workers ship arrive
in bulk, one queue item per shipment); events and log records are appended to an in-memory
queue, executions (one a task) to a list of their run's (``execution_rows``). The writer
process commits each batch in one transaction: transitions, events and executions as blocks
(many msgpack-packed records to a row, with the names a transition block mentions in a
full-text index), so a batch costs a few row inserts rather than one per record, with no
Python code run per record. When a ring wraps past what the thread has read, or the queue is
full, the records are dropped and counted (``Ledger.dropped``, plus a rate-limited WARNING on
``storied.record``): recording must never slow the scheduler down, and must never lose
anything silently.

The name index that finds a key's blocks is written every ``index_interval`` seconds (and at
close), not with every batch (``_PendingNames``); readers take the blocks it does not cover yet
as candidates, so a lookup misses nothing committed.

Crash bound: a crash of the scheduler loses at most what was logged but not yet handed over,
i.e. about ``flush_interval`` seconds of records; what the writer process was given it commits.
See docs/ledger.md for the schema and the guarantees.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import sys
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import eq, itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from zlib import crc32

import msgpack

from storied.loglevels import parse_level
from storied.record.blocks import (
    NAME_SEPARATOR,
    block_bytes,
    names_text,
    pack_block,
    tables_named,
    unpack_block,
)
from storied.record.errors import LedgerError
from storied.record.events import EventRecord, StoredEvent, record_of
from storied.record.executions import (
    EXECUTION_BLOCK_COLUMNS,
    EXECUTION_BLOCKS_SCHEMA,
    EXECUTION_FIELDS,
    block_executions,
    execution_block_row,
    execution_counts,
    execution_rows,
)
from storied.record.integrity import check_quickly, ledger_error, open_for_reading
from storied.record.logcapture import LogRecordEntry
from storied.record.shipments import (
    MalformedShipmentError,
    Shipment,
    shipped_block,
    shipped_columns,
)
from storied.record.summary import (
    LET_GO,
    SUMMARY_MAX_TASKS,
    SUMMARY_SCHEMA,
    SUMMARY_TABLES,
    RunTally,
    read_counts,
    read_keys_from,
    read_page,
)
from storied.record.transitions import TransitionEntry, TransitionLog, TransitionRecord, new_record
from storied.record.writelock import WriterLock

if TYPE_CHECKING:
    from storied.record.writer import WriterProcess

logger = logging.getLogger("storied.record")

SCHEMA_VERSION = 9
#: Versions this storied reads: 4 is 5 without the run summaries (``storied.record.summary``);
#: 5 is 6 with blocks indexed by CRC-32 tokens of their names (``transition_names``) instead of
#: the names themselves (``block_names``); 6 is 7 with executions as rows only, no
#: ``execution_blocks`` (``storied.record.executions``); 7 is 8 without blocks that hold a
#: worker's shipment as it came (``storied.record.shipments``); 8 is 9 with every block in the
#: name index as soon as it is committed (9 keeps ``INDEXED_THROUGH`` in ``meta``: blocks after it
#: are not in the index yet). Writing to any adds what it lacks (what it holds stays where it is)
#: and makes it version 9.
READABLE_SCHEMA_VERSIONS = (4, 5, 6, 7, 8, 9)
#: The page size of a new file. Blocks run to tens of kilobytes compressed: large pages store
#: them with a fraction of the CPU of SQLite's default 4 KiB (map of no-op tasks, uncompressed
#: blocks: writer CPU per task down by a third). Half of the largest page does better still: a
#: commit writes every page it touched whole, the indexes' last leaf pages among them (the
#: writer process's CPU per task about 8% less than with 64 KiB, replays of a tree and a map).
PAGE_SIZE = 32_768
#: The ``meta`` row naming the highest block id the name index covers (version 9 on)
INDEXED_THROUGH = "names_indexed_through"

#: Every ASCII character but NUL and ``NAME_SEPARATOR`` is part of a name's token (non-ASCII
#: ones are, by the ascii tokenizer's default), so a name is one token, case folded, unless it
#: holds NUL or the separator.
_NAME_CHARS = "".join(c for c in map(chr, range(1, 128)) if not c.isalnum() and c != NAME_SEPARATOR)


def _sql_quoted(text: str) -> str:
    """``text`` as an SQL (and FTS5 option) string literal."""
    return "'" + text.replace("'", "''") + "'"


_NAME_TOKENIZER = (
    f"ascii separators {_sql_quoted(NAME_SEPARATOR)} tokenchars {_sql_quoted(_NAME_CHARS)}"
)
#: The name index: SQLite's own tokenizer splits a block's names, with the GIL released,
#: where hashing them in Python held it (the writer's largest share of the scheduler's GIL).
#: Contentless: the names are in the blocks already.
NAMES_INDEX_SCHEMA = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS block_names USING fts5 "
    f"(names, content = '', detail = none, tokenize = {_sql_quoted(_NAME_TOKENIZER)})"
)
#: How the name index keeps its segments (stored in the index, so set on every file a writer
#: opens): merged 16 at a time rather than 4, and in leaves as large as the file's pages,
#: nearly every name is rewritten by fewer merges (a replayed tree: the index's CPU down by
#: about a sixth); a lookup probes a few more segments, in microseconds.
NAMES_INDEX_OPTIONS = (("automerge", 16), ("pgsz", 64_000))

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    first_seq INTEGER NOT NULL,
    info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transition_blocks (
    block_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_time REAL NOT NULL,
    last_time REAL NOT NULL,
    entries BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS transition_blocks_by_run ON transition_blocks (run_id);
CREATE INDEX IF NOT EXISTS transition_blocks_by_seq ON transition_blocks (last_seq);
CREATE INDEX IF NOT EXISTS transition_blocks_by_time ON transition_blocks (first_time);
CREATE TABLE IF NOT EXISTS event_blocks (
    block_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_time REAL NOT NULL,
    last_time REAL NOT NULL,
    entries BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS event_blocks_by_topic ON event_blocks (topic, last_seq);
CREATE INDEX IF NOT EXISTS event_blocks_by_seq ON event_blocks (last_seq);
CREATE INDEX IF NOT EXISTS event_blocks_by_run ON event_blocks (run_id);
CREATE INDEX IF NOT EXISTS event_blocks_by_time ON event_blocks (first_time);
CREATE TABLE IF NOT EXISTS executions (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    worker TEXT NOT NULL,
    thread INTEGER NOT NULL,
    start REAL NOT NULL,
    stop REAL NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_by_run ON executions (run_id);
CREATE INDEX IF NOT EXISTS executions_by_stop ON executions (stop);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    level TEXT NOT NULL,
    levelno INTEGER NOT NULL,
    logger TEXT NOT NULL,
    message TEXT NOT NULL,
    "where" TEXT NOT NULL,
    key TEXT
);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (timestamp);
CREATE INDEX IF NOT EXISTS logs_by_run ON logs (run_id);
CREATE INDEX IF NOT EXISTS logs_by_key ON logs (key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    stimulus_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    outcome TEXT NOT NULL,
    attempt INTEGER,
    worker TEXT,
    start REAL,
    stop REAL,
    exception_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT,
    blame TEXT
);
CREATE INDEX IF NOT EXISTS failures_by_key ON failures (key);
CREATE INDEX IF NOT EXISTS failures_by_run ON failures (run_id);
"""
    + SUMMARY_SCHEMA
    + EXECUTION_BLOCKS_SCHEMA
)

#: What a failure record holds, in the order of the ``failures`` table's columns after the
#: run id: one failed attempt of a task (``outcome`` "retried" or "erred"), or a dependent that
#: erred because ``blame`` did (no attempt, worker or times of its own).
FAILURE_FIELDS = (
    "key",
    "stimulus_id",
    "timestamp",
    "outcome",
    "attempt",
    "worker",
    "start",
    "stop",
    "exception_type",
    "message",
    "traceback",
    "blame",
)

_LOG_COLUMNS = 'timestamp, level, levelno, logger, message, "where", key'
#: Log records per page when a reader goes through them all (``Ledger.log_pages``)
LOG_PAGE_SIZE = 10_000
#: Transitions per block: a story reads whole blocks, so smaller blocks answer faster; larger
#: ones index each name fewer times.
_TRANSITIONS_PER_BLOCK = 1_000
#: Executions per block, as many as a batch held when they were queued one by one: a block
#: lost to damage loses no more
_EXECUTIONS_PER_BLOCK = 2_000
_PRUNE_CHUNK = 5_000
#: The writer's connection: durable at every checkpoint, not every commit (docs/ledger.md)
WRITER_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA cache_size=-32768")
_PRUNE_BLOCKS = 50
_DROP_WARNING_INTERVAL = 1.0

# Queue item kinds; items are tuples whose first element is one of these.
_TRANSITIONS, _SHIPMENT, _EVENT, _LOG, _OPEN_RUN, _END_RUN, _FLUSH, _FAILURE = range(8)

_STOP = EXECUTION_FIELDS.index("stop")
_token_of = "%08x".__mod__  # a third of the cost of "{:08x}".format


def name_tokens(names: Iterable[str]) -> list[str]:
    """The tokens that stood for keys or stimulus ids in ``transition_names`` (version 5).

    Eight hex digits of each name's CRC-32. Two names may share a token; readers compare the
    names themselves in the blocks they fetch.
    """
    return list(map(_token_of, map(crc32, map(str.encode, names))))


_UNTOKENIZED = re.compile(f"[\\x00{NAME_SEPARATOR}]")


def names_query(names: Iterable[str]) -> str | None:
    """An FTS5 query on ``block_names`` for blocks that mention any of ``names``; None if a
    name has no token (the empty name): then only reading every block finds it.

    A name is one token, case folded: names that differ in case share it, and readers compare
    the names themselves in the blocks they fetch. A name holding NUL or the separator was
    indexed as its parts; its longest part finds every block that names it, and a few more.
    """
    terms = []
    for name in names:
        parts = _UNTOKENIZED.split(name)
        longest = max(parts, key=len)
        if not longest:
            return None
        terms.append('"' + longest.replace('"', '""') + '"')
    return " OR ".join(terms)


def _named_blocks(
    conn: sqlite3.Connection, names: Iterable[str]
) -> tuple[str, list[str | int]] | None:
    """A filter on ``transition_blocks`` keeping those that the name index has under one of
    ``names`` (in ``block_names``, and in ``transition_names`` for blocks written at version 5
    or before), and those it does not cover yet (``indexed_through``); None when the index
    cannot tell (see ``names_query``)."""
    names = list(names)
    query = names_query(names)
    if query is None:
        return None
    tables = tables_named(conn, "block_names", "transition_names")
    lookups: list[str] = []
    params: list[str | int] = []
    if "block_names" in tables:
        lookups.append("SELECT rowid FROM block_names WHERE block_names MATCH ?")
        params.append(query)
    if "transition_names" in tables:
        lookups.append("SELECT rowid FROM transition_names WHERE transition_names MATCH ?")
        params.append(" OR ".join(f'"{token}"' for token in name_tokens(names)))
    found = f"block_id IN ({' UNION '.join(lookups) or 'SELECT NULL'})"
    through = indexed_through(conn)
    if through is None:
        return found, params
    return f"({found} OR block_id > ?)", [*params, through]


def _placeholders(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


class _Filters:
    """Builds a WHERE clause and its parameters from optional filters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[object] = []

    def add(self, clause: str, *params: object) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def where(self) -> str:
        return f"WHERE {' AND '.join(self.clauses)}" if self.clauses else ""


def _select(
    columns: str, table: str, filters: _Filters, order: str, limit: int | None
) -> tuple[str, list[object]]:
    """SQL returning matching rows oldest first, keeping only the newest ``limit`` of them."""
    matching = f"SELECT * FROM {table} {filters.where()}"
    if limit is None:
        return f"SELECT {columns} FROM ({matching}) ORDER BY {order}", filters.params
    return (
        f"SELECT {columns} FROM ({matching} ORDER BY {order} DESC LIMIT ?) ORDER BY {order}",
        [*filters.params, limit],
    )


def _log_filters(
    *,
    run_id: int | None = None,
    level: str | int | None = None,
    where: str | None = None,
    since: float | None = None,
    until: float | None = None,
    logger: str | None = None,
    keys: Sequence[str] | None = None,
) -> _Filters:
    """The WHERE clause of a ``Ledger.logs`` query."""
    filters = _run_filter(run_id)
    if level is not None:
        filters.add("levelno >= ?", parse_level(level))
    for clause, value in (
        ('"where" = ?', where),
        ("timestamp >= ?", since),
        ("timestamp < ?", until),
    ):
        if value is not None:
            filters.add(clause, value)
    if logger is not None:
        filters.add(
            "(logger = ? OR substr(logger, 1, ?) = ?)", logger, len(logger) + 1, f"{logger}."
        )
    if keys is not None:
        filters.add(f"key IN ({_placeholders(keys)})", *keys)
    return filters


def _run_filter(run_id: int | None) -> _Filters:
    filters = _Filters()
    if run_id is not None:
        filters.add("run_id = ?", run_id)
    return filters


def _block_filters(
    run_id: int | None, max_seq: int | None, after_seq: int | None = None
) -> _Filters:
    """Filters on block columns that narrow which blocks can hold matching records."""
    filters = _run_filter(run_id)
    if max_seq is not None:
        filters.add("first_seq < ?", max_seq)
    if after_seq is not None:
        filters.add("last_seq > ?", after_seq)
    return filters


def _add_time_filters(filters: _Filters, since: float | None, until: float | None) -> None:
    if since is not None:
        filters.add("last_time >= ?", since)
    if until is not None:
        filters.add("first_time < ?", until)


_R = TypeVar("_R", TransitionRecord, EventRecord)


def _newest_first(
    rows: Iterable[tuple[Any, ...]], decode: Callable[..., Iterable[_R]], limit: int | None
) -> list[_R]:
    """Decode blocks (rows of ``last_seq`` then ``decode``'s arguments, newest first) into
    records, oldest first.

    With ``limit``, only the newest ``limit`` records are kept, and reading stops at the first
    block whose records are all older than those.
    """
    found: list[_R] = []
    for last_seq, *block in rows:
        if limit is not None and len(found) >= limit:
            found.sort(key=_seq, reverse=True)
            del found[limit:]
            if last_seq < found[-1].seq:
                break
        found.extend(decode(*block))
    found.sort(key=_seq)
    return found if limit is None else found[max(len(found) - limit, 0) :]


def _seq(rec: TransitionRecord | EventRecord) -> int:
    return rec.seq


@dataclass(slots=True)
class _Followed:
    """A transition log the writer persists, and how far it has read it."""

    log: TransitionLog
    run_id: int
    read_through: int = 0


class Ledger:
    """A durable, queryable history of runs, transitions, events, executions and logs."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        queue_size: int = 100_000,
        batch_size: int = 2_000,
        flush_interval: float = 0.05,
        retain: float | None = None,
        prune_every: float = 60.0,
        index_interval: float = 0.2,
    ) -> None:
        """Nothing touches the file until ``start_run`` (writing) or a query (reading)."""
        self.path = Path(path)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.index_interval = index_interval
        #: when the writer process has work of its own due (it says so with each reply)
        self._writer_due_at = float("inf")
        self.retain = retain
        self.prune_every = prune_every
        self._pending: deque[tuple[Any, ...]] = deque()
        self._capacity = 0  # nothing is accepted until a run starts the writer
        self._wake = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None
        self._open_runs: list[int] = []
        #: runs started since the writer thread last handed a batch over
        self._opened: list[int] = []
        #: each open run's executions not written yet (``execution_rows``)
        self._executions: dict[int, list[tuple[Any, ...]]] = {}
        self._followed: list[_Followed] = []
        self._first_seqs: dict[int, int] = {}
        self._writer_lock = WriterLock(self.path)
        self._drop_lock = threading.Lock()
        self._dropped = 0
        #: records committed to the file (written by the writer thread alone)
        self.written = 0
        #: CPU time the writer thread and the writer process have used: what the ledger costs
        self.writer_cpu_seconds = 0.0
        #: the writer process's part of it, and its pid while it runs
        self.writer_process_cpu_seconds = 0.0
        self.writer_pid: int | None = None
        self._dropped_reported = 0
        self._last_drop_warning = 0.0
        #: why the writer's latest batch failed, if one did ("OperationalError: ...")
        self.write_error: str | None = None
        self._last_write_error_log = -_DROP_WARNING_INTERVAL

    # ------------------------------------------------------------------ writing

    def start_run(self, info: dict[str, Any]) -> int:
        """Record the start of a run (one scheduler start) and start the writer thread.

        Raises ``LedgerLockedError`` while another process writes the file,
        ``LedgerCorruptError`` if SQLite finds it damaged, and ``LedgerError`` naming the file
        and the cause when it cannot be written (read-only, full disk, missing directory).
        """
        locked_here = not self._writer_lock.held
        self._writer_lock.acquire()
        try:
            run_id, first_seq = self._insert_run(info)
        except BaseException:
            if locked_here:
                self._writer_lock.release()
            raise
        self._first_seqs[run_id] = first_seq
        self._open_runs.append(run_id)
        self._executions[run_id] = []
        self._opened.append(run_id)  # for the writer process to sum it up
        if self._writer is None:
            self._capacity = self.queue_size
            self._stopping = False
            self._writer = threading.Thread(
                target=self._write_forever, name=f"storied-ledger-{self.path.name}", daemon=True
            )
            self._writer.start()
        return run_id

    def _insert_run(self, info: dict[str, Any]) -> tuple[int, int]:
        """Check the file (a new one gets the schema), then add a run: its id and first seq."""
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            with _writing_connection(self.path) as conn:
                if existed:
                    check_quickly(conn, self.path)
                # only a new file takes this; an existing one keeps its page size
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                create_or_check_schema(conn)
                index_unindexed_blocks(conn)
                first_seq = _next_free_seq(conn)
                run_id = conn.execute(
                    "INSERT INTO runs (started, first_seq, info) VALUES (?, ?, ?) RETURNING run_id",
                    (time.time(), first_seq, json.dumps(info, default=repr)),
                ).fetchone()[0]
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise ledger_error(self.path, error, "cannot write the ledger") from error
        return run_id, first_seq

    def first_seq(self, run_id: int) -> int:
        """The first sequence number ``run_id`` may use: seqs stay unique across the file's runs,
        so records of every run can be merged and de-duplicated by seq."""
        return self._first_seqs[run_id]

    def follow(self, run_id: int, log: TransitionLog) -> None:
        """Persist every entry ``log`` holds or will hold, until ``close``.

        The writer reads the log's ring on its own thread, every ``flush_interval`` seconds or
        as soon as the ring is half full of entries it has not read. Whatever the ring
        overwrites before the writer gets to it is lost, and counted as dropped.
        """
        if run_id not in self._open_runs:
            raise LedgerError(f"run {run_id} is not open on {self.path}: follow after start_run")
        log.wake_reader = self._wake.set
        log.reader_wake_at = max(log.maxlen // 2, 1)
        self._followed.append(_Followed(log, run_id))

    def put_transitions(
        self, run_id: int, entries: list[TransitionEntry], recommendations: list[dict[str, str]]
    ) -> None:
        """Queue many transitions (in seq order) as one item."""
        columns = _columns_of(entries)
        self._put((_TRANSITIONS, run_id, columns, recommendations), records=len(entries))

    def put_shipment(self, run_id: int, where: str, first_seq: int, shipment: Shipment) -> None:
        """Queue a worker's shipment, numbered from ``first_seq`` on: stored as it came, packed
        (``storied.record.shipments``), so neither the loop nor the writer unpacks it."""
        self._put((_SHIPMENT, run_id, where, first_seq, shipment), records=shipment.count)

    def put_event(self, run_id: int, topic: str, stored: StoredEvent) -> None:
        self._put((_EVENT, run_id, topic, stored))

    def execution_rows(self, run_id: int) -> list[tuple[Any, ...]]:
        """The list the recording thread appends the executions of open run ``run_id`` to, as
        tuples of ``EXECUTION_FIELDS``: one per task, so a list append rather than a queued
        item each, which the writer then took apart one by one. The writer takes what is there
        with every batch. Whoever appends keeps it under ``queue_size`` long and counts what
        it leaves out with ``count_dropped``."""
        return self._executions[run_id]

    def put_execution(
        self,
        run_id: int,
        key: str,
        worker: str,
        thread: int,
        start: float,
        stop: float,
        outcome: str,
    ) -> None:
        """Append one execution to ``execution_rows(run_id)`` (dropped once the run ended)."""
        rows = self._executions.get(run_id)
        if rows is None or len(rows) >= self._capacity:
            self.count_dropped(1)
            return
        rows.append((key, worker, thread, start, stop, outcome))

    def put_log(self, run_id: int, entry: LogRecordEntry) -> None:
        self._put((_LOG, run_id, entry))

    def put_failure(self, run_id: int, failure: dict[str, Any]) -> None:
        """Queue one failure (a dict with the keys of ``FAILURE_FIELDS``)."""
        self._put((_FAILURE, run_id, tuple(failure[name] for name in FAILURE_FIELDS)))

    def _put(self, item: tuple[Any, ...], records: int = 1) -> None:
        """Enqueue without ever blocking; count the item's ``records`` as dropped when the
        queue is full."""
        pending = self._pending
        if len(pending) >= self._capacity:
            self.count_dropped(records)
            return
        pending.append(item)
        if len(pending) == self.batch_size:
            self._wake.set()

    @property
    def dropped(self) -> int:
        return self._dropped

    def flush(self, timeout: float = 10, indexed: bool = False) -> None:
        """Wait until everything queued so far is committed to disk; with ``indexed``, until
        the name index covers it too (lookups find it either way: ``_PendingNames``)."""
        if self._writer is None or not self._writer.is_alive():
            return
        committed = threading.Event()
        self._pending.append((_FLUSH, committed, indexed))
        self._wake.set()
        if not committed.wait(timeout):
            raise TimeoutError(f"ledger {self.path} did not flush within {timeout} s")

    def close(self) -> None:
        """Flush, mark this object's runs ended, stop and join the writer thread."""
        if self._writer is None:
            return
        ended = time.time()
        for run_id in self._open_runs:
            self._pending.append((_END_RUN, run_id, ended))
        self._open_runs.clear()
        self._capacity = 0  # later puts are counted as dropped, not silently lost
        self._stopping = True
        self._wake.set()
        self._writer.join()
        self._writer = None
        for followed in self._followed:
            followed.log.reader_wake_at, followed.log.wake_reader = sys.maxsize, None
        self._followed.clear()
        self._writer_lock.release()
        self._warn_about_drops(force=True)

    def _write_forever(self) -> None:
        from storied.record.writer import WriterProcess  # it imports this module

        try:
            with WriterProcess(
                self.path, self.index_interval, self.retain, self.prune_every
            ) as writer:
                self.writer_pid = writer.pid
                self._write_until_closed(writer)
        finally:
            self.writer_pid = None

    def _write_until_closed(self, writer: WriterProcess) -> None:
        next_write = time.monotonic()
        while True:
            # a batch every flush interval, or sooner when woken (a flush, a backlog, a ring
            # half full): not one after another as fast as records come in, which made many
            # small transactions that each cost a commit
            self._wake.wait(max(next_write - time.monotonic(), 0))
            self._wake.clear()
            next_write = time.monotonic() + self.flush_interval
            stopping = self._stopping
            while self._write_batch(writer) or (stopping and self._pending):
                pass
            self._warn_about_drops()
            if stopping and not self._pending:
                return

    def _write_batch(self, writer: WriterProcess) -> bool:
        """Have the writer process commit up to ``batch_size`` queued items and whatever is
        new in the followed logs, in one transaction, then release flushers. Returns True
        while the queue holds another full batch (a backlog to catch up on)."""
        opened, self._opened = self._opened, []
        batch: list[tuple[Any, ...]] = [(_OPEN_RUN, run_id) for run_id in opened]
        flushed: list[threading.Event] = []
        index_now = self._stopping  # a close leaves nothing out of the name index
        pending = self._pending
        while pending and len(batch) < self.batch_size + len(opened):
            item = pending.popleft()
            if item[0] == _FLUSH:
                flushed.append(item[1])
                index_now = index_now or item[2]
            else:
                batch.append(item)
        # read after taking the flush markers: what was logged before a flush is in this batch
        transitions = self._read_followed()
        executions = self._take_executions()
        if batch or transitions or executions or index_now or self._writer_due():
            self._write(writer, batch, transitions, executions, index_now)
        for event in flushed:
            event.set()
        return len(pending) >= self.batch_size

    def _writer_due(self) -> bool:
        """Whether the writer process has work of its own due (names for the index, retention)
        that it needs a message for, there being nothing new to write."""
        return time.monotonic() >= self._writer_due_at

    def _write(
        self,
        writer: WriterProcess,
        batch: list[tuple[Any, ...]],
        transitions: list[tuple[int, list[TransitionEntry], list[dict[str, str]]]],
        executions: dict[int, list[tuple[Any, ...]]],
        index_now: bool,
    ) -> None:
        """Hand a batch to the writer process, and take in what became of it."""
        done = writer.write(batch, transitions, executions, index_now)
        self._writer_due_at = time.monotonic() + done.due_in
        self.written += done.written
        self.writer_process_cpu_seconds = done.cpu_seconds
        self.writer_cpu_seconds = time.thread_time() + done.cpu_seconds
        for levelno, message in done.logs:
            logger.log(levelno, "%s", message)
        if done.lost:
            self.count_dropped(done.lost)
            self._report_write_error(done.error_type, done.error, done.traceback, done.lost)

    def _take_executions(self) -> dict[int, list[tuple[Any, ...]]]:
        """Each run's executions appended since the last batch (a copy, then a deletion of as
        many: the recording thread may append in between)."""
        taken = {}
        for run_id, rows in list(self._executions.items()):
            if rows:
                taken[run_id] = rows[:]
                del rows[: len(taken[run_id])]
            elif run_id not in self._open_runs:
                del self._executions[run_id]  # ended, and all written
        return taken

    def _read_followed(
        self,
    ) -> list[tuple[int, list[TransitionEntry], list[dict[str, str]]]]:
        """``(run_id, entries, recommendations)`` new in each followed log since the last read."""
        found = []
        for followed in list(self._followed):
            newest, lost, entries, recommendations = followed.log.entries_after(
                followed.read_through
            )
            followed.read_through = newest
            followed.log.reader_wake_at = newest + max(followed.log.maxlen // 2, 1)
            if lost:
                self.count_dropped(lost)
            if entries:
                found.append((followed.run_id, entries, recommendations))
        return found

    def _report_write_error(self, error_type: str, error: str, traceback: str, lost: int) -> None:
        """Say which file failed and why: with the writer process's ``traceback`` the first
        time, then at most once a second (a full disk fails every batch). The scheduler goes
        on, its history in memory; ``write_error`` keeps the latest cause for its ``ledger``
        events."""
        self.write_error = f"{error_type}: {error}"
        now = time.monotonic()
        if now - self._last_write_error_log < _DROP_WARNING_INTERVAL:
            return
        first = self._last_write_error_log == -_DROP_WARNING_INTERVAL
        self._last_write_error_log = now
        logger.error(
            "%s; %d records dropped (history stays in memory; the scheduler goes on)%s",
            error,
            lost,
            f"\n{traceback.rstrip()}" if first and traceback else "",
        )

    def count_dropped(self, count: int) -> None:
        """Count ``count`` records as dropped (warned about once a second)."""
        with self._drop_lock:
            self._dropped += count

    def _warn_about_drops(self, force: bool = False) -> None:
        """At most once a second, say how many records were dropped since the last warning."""
        now = time.monotonic()
        if self._dropped == self._dropped_reported:
            return
        if not force and now - self._last_drop_warning < _DROP_WARNING_INTERVAL:
            return
        newly = self._dropped - self._dropped_reported
        self._dropped_reported = self._dropped
        self._last_drop_warning = now
        logger.warning(
            "ledger %s dropped %d records: its write queue (%d items) was full, or a transition "
            "log wrapped before they were written; %d dropped in all. Recording never blocks "
            "the scheduler: raise queue_size or the transition log length, or use faster storage",
            self.path,
            newly,
            self.queue_size,
            self._dropped_reported,
        )

    # ------------------------------------------------------------------ reading

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own: readers never wait for (or block) the writer."""
        try:
            conn = open_for_reading(self.path)
            try:
                version = _schema_version(conn)
                if version is None:
                    raise LedgerError(f"{self.path} is not a storied ledger")
                if version not in READABLE_SCHEMA_VERSIONS:
                    raise LedgerError(
                        f"{self.path} has ledger schema version {version}; this storied reads "
                        f"versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}"
                    )
                yield conn
            finally:
                conn.close()
        except sqlite3.DatabaseError as error:
            raise ledger_error(self.path, error, "cannot read the ledger") from error

    def runs(self) -> list[dict[str, Any]]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT run_id, started, ended, first_seq, info FROM runs ORDER BY run_id"
            ).fetchall()
        return [
            {
                "run_id": run_id,
                "started": started,
                "ended": ended,
                "first_seq": first_seq,
                "info": json.loads(info),
            }
            for run_id, started, ended, first_seq, info in rows
        ]

    def story(
        self,
        *keys_or_stimulus_ids: str,
        run_id: int | None = None,
        max_seq: int | None = None,
        where: str | None = None,
        limit: int | None = None,
    ) -> list[TransitionRecord]:
        """Like ``TransitionLog.story``, across every run on file unless ``run_id`` is given.

        ``max_seq`` keeps records with a smaller seq (the Record uses it to skip what it still
        has in memory, and pages to go on below the last); ``where`` keeps those logged by one
        process; ``limit`` the newest that many, reading blocks only until it has them.
        """
        if not keys_or_stimulus_ids:
            return []
        return self._named_transitions(set(keys_or_stimulus_ids), run_id, max_seq, where, limit)

    def transitions(
        self,
        keys: Iterable[str] | None = None,
        stimulus_id: str | None = None,
        start: str | None = None,
        finish: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        run_id: int | None = None,
        max_seq: int | None = None,
        where: str | None = None,
    ) -> list[TransitionRecord]:
        """Like ``TransitionLog.query``: filters ANDed, oldest first, ``limit`` keeps the newest."""
        key_set = None if keys is None else set(keys)

        def wanted(rec: TransitionRecord) -> bool:
            return (
                (key_set is None or rec.key in key_set)
                and (stimulus_id is None or rec.stimulus_id == stimulus_id)
                and (start is None or rec.start == start)
                and (finish is None or rec.finish == finish)
                and (since is None or rec.timestamp >= since)
                and (until is None or rec.timestamp < until)
                and (max_seq is None or rec.seq < max_seq)
                and (where is None or rec.where == where)
            )

        if key_set is not None or stimulus_id is not None:
            names = key_set if key_set is not None else {stimulus_id}
            found = [r for r in self._named_transitions(names, run_id, max_seq) if wanted(r)]
            return found if limit is None else found[max(len(found) - limit, 0) :]
        filters = _block_filters(run_id, max_seq)
        _add_time_filters(filters, since, until)
        return self._read_blocks(
            f"SELECT last_seq, entries FROM transition_blocks {filters.where()} "
            "ORDER BY last_seq DESC",
            filters.params,
            lambda blob: filter(wanted, _transition_records(blob)),
            limit,
        )

    def _named_transitions(
        self,
        names: set[str],
        run_id: int | None,
        max_seq: int | None,
        where: str | None = None,
        limit: int | None = None,
    ) -> list[TransitionRecord]:
        """Records below ``max_seq``, oldest first, whose key, stimulus id or recommendations
        name one of ``names``.

        The name index finds the blocks; within them, entries are matched while still plain
        msgpack arrays, and only the matches become records.
        """

        def concerned(blob: bytes) -> list[TransitionRecord]:
            return [
                _transition_record(logged)
                for logged in transition_block(blob)
                if (
                    logged[0][1] in names
                    or logged[0][4] in names
                    or not names.isdisjoint(logged[1])
                )
                and (max_seq is None or logged[0][0] < max_seq)
                and (where is None or logged[0][6] == where)
            ]

        if limit is not None and limit <= 0:
            return []
        filters = _block_filters(run_id, max_seq)
        with self._reading() as conn:
            named = _named_blocks(conn, names)
            if named is not None:
                filters.add(named[0], *named[1])
            blocks = conn.execute(
                f"SELECT last_seq, entries FROM transition_blocks {filters.where()} "
                "ORDER BY last_seq DESC",
                filters.params,
            )
            return _newest_first(blocks, concerned, limit)

    def _read_blocks(
        self,
        sql: str,
        params: list[object],
        decode: Callable[..., Iterable[_R]],
        limit: int | None,
    ) -> list[_R]:
        """Records from the blocks ``sql`` selects, as ``_newest_first`` reads them."""
        if limit is not None and limit <= 0:
            return []
        with self._reading() as conn:
            return _newest_first(conn.execute(sql, params), decode, limit)

    def events(
        self,
        topic: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        run_id: int | None = None,
        max_seq: int | None = None,
        after_seq: int | None = None,
        leave_out: Collection[str] = (),
    ) -> list[EventRecord]:
        """Events oldest first; ``after_seq`` serves followers polling for new rows;
        ``leave_out``: topics not wanted (``limit`` counts only the others)."""
        filters = _block_filters(run_id, max_seq, after_seq)
        if topic is not None:
            filters.add("topic = ?", topic)
        if leave_out:
            filters.add(f"topic NOT IN ({_placeholders(leave_out)})", *leave_out)
        _add_time_filters(filters, since, until)

        def wanted(rec: EventRecord) -> bool:
            return (
                (since is None or rec.timestamp >= since)
                and (until is None or rec.timestamp < until)
                and (max_seq is None or rec.seq < max_seq)
                and (after_seq is None or rec.seq > after_seq)
            )

        def decode(block_topic: str, blob: bytes) -> Iterable[EventRecord]:
            return filter(wanted, _event_records(block_topic, blob))

        return self._read_blocks(
            "SELECT last_seq, topic, entries FROM event_blocks "
            f"{filters.where()} ORDER BY last_seq DESC",
            filters.params,
            decode,
            limit,
        )

    def event_topics(self) -> list[str]:
        """Every topic with events on file."""
        with self._reading() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT topic FROM event_blocks")]

    def logs(
        self,
        level: str | int | None = None,
        where: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        *,
        run_id: int | None = None,
        until: float | None = None,
        logger: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[LogRecordEntry]:
        """Log entries oldest first; ``level`` is a minimum, by name ("WARNING") or number;
        ``logger`` keeps that logger and its children; ``keys``, what those tasks logged and
        printed (``worker.capture-task-logs``). ``limit`` keeps the newest."""
        filters = _log_filters(
            run_id=run_id,
            level=level,
            where=where,
            since=since,
            until=until,
            logger=logger,
            keys=keys,
        )
        sql, params = _select(_LOG_COLUMNS, "logs", filters, "id", limit)
        with self._reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [LogRecordEntry(*row) for row in rows]

    def logger_counts(self, run_id: int | None = None) -> dict[str, int]:
        """How many log records each logger wrote (in run ``run_id``, or in every run)."""
        filters = _run_filter(run_id)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT logger, count(*) FROM logs {filters.where()} GROUP BY logger",
                filters.params,
            ).fetchall()
        return dict(rows)

    def log_pages(
        self, page_size: int = LOG_PAGE_SIZE, **query: Any
    ) -> Iterator[list[LogRecordEntry]]:
        """What ``logs(**query)`` finds (no ``limit``), oldest first, ``page_size`` records at a
        time: a reader of a ledger with millions of records holds one page."""
        after = 0
        while True:
            filters = _log_filters(**query)
            filters.add("id > ?", after)
            sql = f"SELECT id, {_LOG_COLUMNS} FROM logs {filters.where()} ORDER BY id LIMIT ?"
            with self._reading() as conn:
                rows = conn.execute(sql, [*filters.params, page_size]).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [LogRecordEntry(*row[1:]) for row in rows]

    def executions(
        self, run_id: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Task executions (the timeline), in the order they were recorded; ``limit`` keeps
        the newest that many.

        A failed one carries its failure's ``attempt``, ``exception_type``, ``message`` and
        ``traceback`` too (None on the others): the failure row of the same run, key, worker
        and start.
        """
        filters = _run_filter(run_id)
        filters.add("attempt IS NOT NULL")
        with self._reading() as conn:
            rows = execution_rows(conn, run_id, limit)
            failed = {
                (run, key, worker, start): details
                for run, key, worker, start, *details in conn.execute(
                    f"SELECT run_id, key, worker, start, {', '.join(_EXECUTION_FAILURE_FIELDS)} "
                    f"FROM failures {filters.where()} ORDER BY id",
                    filters.params,
                )
            }
        fields = ("run_id", *EXECUTION_FIELDS, *_EXECUTION_FAILURE_FIELDS)
        no_failure = (None,) * len(_EXECUTION_FAILURE_FIELDS)
        return [
            dict(zip(fields, (*row, *failed.get(row[:3] + row[4:5], no_failure)), strict=True))
            for row in rows
        ]

    def execution_outcomes(self, run_id: int) -> list[tuple[str, str, float, float, str]]:
        """``(key, worker, start, stop, outcome)`` of every execution of ``run_id``, in the
        order recorded: the lean read for counting over runs of a million tasks."""
        with self._reading() as conn:
            rows = execution_rows(conn, run_id)
        return [
            (key, worker, start, stop, outcome) for _, key, worker, _, start, stop, outcome in rows
        ]

    def scheduler_outcomes(self, run_id: int) -> dict[str, str]:
        """Each key's outcome on the scheduler in ``run_id``, as ``tasks`` gives its ``state``
        (the last state other than released or forgotten; that one if it had no other), in
        one pass over the run's blocks that makes no record objects."""
        tally = RunTally()
        with self._reading() as conn:
            for keys, finishes in scheduler_transitions(conn, run_id):
                tally.add_scheduler_transitions(keys, finishes)
        return tally.outcomes()

    def task_counts(self, run_id: int) -> list[tuple[str, str, str, int]] | None:
        """The counts the writer stored when ``run_id`` ended (``storied.record.summary``), as
        ``(kind, name, detail, count)``; None for a run without a summary (still running,
        crashed, too large, or on a version 4 file): count it from its records instead."""
        with self._reading() as conn:
            return read_counts(conn, run_id)

    def task_page(
        self,
        run_id: int,
        offset: int,
        limit: int,
        prefix: str | None = None,
        state: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Of a summed-up run (``task_counts`` is not None): how many tasks have ``prefix``
        and/or ``state``, and those ``offset`` to ``offset + limit`` of them in key order."""
        with self._reading() as conn:
            return read_page(conn, run_id, offset, limit, prefix, state)

    def task_keys_from(self, run_id: int, text: str, limit: int) -> list[str]:
        """Of a summed-up run: up to ``limit`` of its keys from ``text`` on, in key order."""
        with self._reading() as conn:
            return read_keys_from(conn, run_id, text, limit)

    def failures(
        self,
        keys: Iterable[str] | None = None,
        *,
        run_id: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Failures oldest first: every failed attempt (retried or final) and every dependent
        that erred because of one (``blame``), as dicts of ``run_id`` and ``FAILURE_FIELDS``."""
        filters = _run_filter(run_id)
        key_list = None if keys is None else list(keys)
        if key_list is not None:
            filters.add(f"key IN ({_placeholders(key_list)})", *key_list)
        for clause, value in (("timestamp >= ?", since), ("timestamp < ?", until)):
            if value is not None:
                filters.add(clause, value)
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT run_id, {', '.join(FAILURE_FIELDS)} FROM failures "
                f"{filters.where()} ORDER BY id",
                filters.params,
            ).fetchall()
        return [dict(zip(("run_id", *FAILURE_FIELDS), row, strict=True)) for row in rows]

    def failure(self, key: str, run: int | None = None) -> dict[str, Any] | None:
        """Why ``key`` erred: its newest failure (of run ``run``, default any), or None.

        For a dependent that erred because of another task, ``blame`` names that task and the
        exception and traceback are that task's, as ``Future.exception()`` reports them.
        """
        found = self.failures([key], run_id=run)
        return found[-1] if found else None

    def run_of(self, seqs: Iterable[int]) -> list[int | None]:
        """The run each seq belongs to: seqs of a run start at its ``first_seq``."""
        runs = self.runs()
        firsts = [run["first_seq"] for run in runs]
        ids = [run["run_id"] for run in runs]
        return [ids[i - 1] if (i := bisect_right(firsts, seq)) else None for seq in seqs]

    def run_summaries(self) -> list[dict[str, Any]]:
        """Each run with counts: ``tasks`` run on workers, ``executions``, ``failures``
        (failed attempts), ``erred`` (tasks that finally erred, blamed dependents included),
        ``retried`` attempts, ``workers`` that ran tasks, and ``duration`` in seconds (to its
        end, or to its last execution while running or after a crash)."""
        with self._reading() as conn:
            executed = execution_counts(conn)
            failed = {
                run_id: (attempts, erred, retried)
                for run_id, attempts, erred, retried in conn.execute(
                    "SELECT run_id, count(attempt), "
                    "count(DISTINCT CASE WHEN outcome = 'erred' THEN key END), "
                    "sum(outcome = 'retried') FROM failures GROUP BY run_id"
                )
            }
        summaries = []
        for run in self.runs():
            tasks, executions, workers, last_stop = executed.get(run["run_id"], (0, 0, 0, None))
            attempts, erred, retried = failed.get(run["run_id"], (0, 0, 0))
            end = run["ended"] or last_stop
            summaries.append(
                {
                    **run,
                    "tasks": tasks,
                    "executions": executions,
                    "failures": attempts,
                    "erred": erred,
                    "retried": retried or 0,
                    "workers": workers,
                    "duration": None if end is None else end - run["started"],
                }
            )
        return summaries

    def tasks(
        self,
        *,
        run_id: int | None = None,
        state: str | None = None,
        worker: str | None = None,
        prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
        failed: bool = False,
        slowest: int | None = None,
    ) -> list[dict[str, Any]]:
        """One row per task and run: the task's ``state``, the last state the scheduler moved it
        to other than released or forgotten (its outcome: memory, erred, or how far it got
        before it was let go; ``last_state`` is the very last), the ``worker`` and ``duration``
        of its last execution, every worker it ran on (``workers``), how many ``executions``
        and ``failures`` it had, and its last failure's ``exception`` (and ``blame``).

        Filters are ANDed: ``state`` (the outcome), ``worker`` (of any execution), ``prefix`` (of
        the key), ``since``/``until`` (the task ran in the window: from its first execution's
        ``started`` to its last one's ``stopped``; one that never ran, while the scheduler had
        it: ``first_time`` to ``last_time`` of its transitions), ``failed``
        (any failed attempt or erred, retried or not); ``slowest`` keeps the N longest last
        executions, longest first. Otherwise rows come in order of each task's first record.
        """
        tasks: dict[tuple[int, str], dict[str, Any]] = {}

        def task(run: int, key: str) -> dict[str, Any]:
            row = tasks.get((run, key))
            if row is None:
                row = tasks[run, key] = {
                    "run_id": run,
                    "key": key,
                    "state": None,
                    "last_state": None,
                    "worker": None,
                    "duration": None,
                    "executions": 0,
                    "failures": 0,
                    "exception": None,
                    "blame": None,
                    "first_time": None,
                    "last_time": None,
                    "started": None,
                    "stopped": None,
                    "workers": set(),
                }
            return row

        filters = _block_filters(run_id, None)
        with self._reading() as conn:
            blocks = conn.execute(
                f"SELECT run_id, entries FROM transition_blocks {filters.where()} "
                "ORDER BY first_seq",
                filters.params,
            ).fetchall()
        for run, blob in blocks:
            for (_, key, _, finish, _, timestamp, where, _), _ in transition_block(blob):
                row = task(run, key)
                if row["first_time"] is None or timestamp < row["first_time"]:
                    row["first_time"] = timestamp
                if row["last_time"] is None or timestamp > row["last_time"]:
                    row["last_time"] = timestamp
                if where == "scheduler":
                    row["last_state"] = finish
                    if finish not in LET_GO:
                        row["state"] = finish
        for execution in self.executions(run_id):
            row = task(execution["run_id"], execution["key"])
            row["executions"] += 1
            row["worker"] = execution["worker"]
            row["workers"].add(execution["worker"])
            row["duration"] = execution["stop"] - execution["start"]
            row["started"] = min(row["started"] or execution["start"], execution["start"])
            row["stopped"] = max(row["stopped"] or execution["stop"], execution["stop"])
        for failure in self.failures(run_id=run_id):
            row = task(failure["run_id"], failure["key"])
            row["failures"] += 1
            row["exception"] = f"{failure['exception_type']}: {failure['message']}"
            row["blame"] = failure["blame"]

        def active(row: dict[str, Any]) -> tuple[float, float]:
            """When the task ran (else when the scheduler had it), for ``since``/``until``."""
            if row["executions"]:
                return row["started"], row["stopped"]
            return row["first_time"] or 0.0, row["last_time"] or 0.0

        def wanted(row: dict[str, Any]) -> bool:
            return (
                (state is None or row["state"] == state)
                and (worker is None or worker in row["workers"])
                and (prefix is None or row["key"].startswith(prefix))
                and (since is None or active(row)[1] >= since)
                and (until is None or active(row)[0] < until)
                and (not failed or row["failures"] > 0)
            )

        found = [row for row in tasks.values() if wanted(row)]
        for row in found:
            row["workers"] = sorted(row["workers"])
        if slowest is not None:
            timed = [row for row in found if row["duration"] is not None]
            found = sorted(timed, key=lambda row: row["duration"], reverse=True)[:slowest]
        return found


_EXECUTION_FAILURE_FIELDS = ("attempt", "exception_type", "message", "traceback")


def batch_records(
    batch: list[tuple[Any, ...]],
    transitions: Sequence[tuple[int, list[TransitionEntry], list[dict[str, str]]]],
    executions: dict[int, list[tuple[Any, ...]]],
) -> int:
    """Records in a batch for the writer process: its queued items (a worker's shipment holds
    many transitions, others one), the transitions read from followed logs, the executions."""
    return (
        sum(map(_records_in, batch))
        + sum(len(entries) for _, entries, _ in transitions)
        + sum(map(len, executions.values()))
    )


def _records_in(item: tuple[Any, ...]) -> int:
    kind = item[0]
    if kind == _SHIPMENT:
        return item[4].count
    return len(item[3]) if kind == _TRANSITIONS else kind not in (_OPEN_RUN, _END_RUN)


def _insert(
    conn: sqlite3.Connection,
    batch: list[tuple[Any, ...]],
    followed: Sequence[tuple[int, list[TransitionEntry], list[dict[str, str]]]] = (),
    summed_up: set[int] | None = None,
    executions: dict[int, list[tuple[Any, ...]]] | None = None,
) -> list[tuple[int, str]]:
    """Encode queued items, the ``(run_id, entries, recommendations)`` read from followed
    logs and each run's ``executions``, and insert them: transitions, events and executions
    as blocks, the rest as rows; return the ``block_names`` rows of the transition blocks,
    for ``_PendingNames``. A run in ``summed_up`` (those whose ``_OPEN_RUN`` item came this
    way) has its summary stored when it ends (``_sum_up``).

    Every table gets one multi-row INSERT per batch (a few for thousands of rows), not a
    statement per row: a statement costs Python work and a step of SQLite's each.
    """
    summed_up = set() if summed_up is None else summed_up
    transitions: dict[int, tuple[list[list[Any]], list[dict[str, str]]]] = {}
    events: dict[tuple[int, str], list[StoredEvent]] = {}
    executions = {} if executions is None else executions
    logs: list[tuple[Any, ...]] = []
    failures: list[tuple[Any, ...]] = []
    ended_runs: list[tuple[float, int]] = []
    blocks = _TransitionBlocks()
    for item in batch:
        kind = item[0]
        if kind == _SHIPMENT:
            blocks.add_shipment(*item[1:])
        elif kind == _TRANSITIONS:
            _, run_id, columns, recommendations = item
            run_columns, run_recommendations = transitions.setdefault(
                run_id, ([[] for _ in _ENTRY_FIELDS], [])
            )
            for gathered, column in zip(run_columns, columns, strict=True):
                gathered += column
            run_recommendations += recommendations
        elif kind == _EVENT:
            _, run_id, topic, stored = item
            events.setdefault((run_id, topic), []).append(stored)
        elif kind == _FAILURE:
            _, run_id, fields = item
            failures.append((run_id, *fields))
        elif kind == _LOG:
            _, run_id, entry = item
            logs.append((run_id, *entry.as_list()))
        elif kind == _OPEN_RUN:
            summed_up.add(item[1])
        else:
            _, run_id, ended = item
            ended_runs.append((ended, run_id))
    for run_id, (columns, recommendations) in transitions.items():
        blocks.add(run_id, columns, recommendations)
    for run_id, entries, recommendations in followed:
        blocks.add(run_id, _columns_of(entries), recommendations)
    named = blocks.insert(conn)
    _insert_rows(
        conn,
        "event_blocks",
        _EVENT_BLOCK_COLUMNS,
        [
            _event_block_row(run_id, topic, stored_events)
            for (run_id, topic), stored_events in events.items()
        ],
    )
    _insert_rows(
        conn,
        "execution_blocks",
        EXECUTION_BLOCK_COLUMNS,
        [
            execution_block_row(run_id, rows[low : low + _EXECUTIONS_PER_BLOCK])
            for run_id, rows in executions.items()
            for low in range(0, len(rows), _EXECUTIONS_PER_BLOCK)
        ],
    )
    _insert_rows(conn, "logs", _LOG_ROW_COLUMNS, logs)
    _insert_rows(conn, "failures", ("run_id", *FAILURE_FIELDS), failures)
    conn.executemany("UPDATE runs SET ended = ? WHERE run_id = ?", ended_runs)
    for _, run_id in ended_runs:
        if run_id in summed_up:
            summed_up.discard(run_id)
            _sum_up(conn, run_id)
    return named


def _sum_up(conn: sqlite3.Connection, run_id: int) -> None:
    """Store the summary of run ``run_id``, which just ended: each task's outcome from the
    scheduler's transitions, read back from the run's blocks (in the caller's transaction).

    Summing them up as they were written held two dictionaries of every task of the run in
    the writer process, updated at random places at every transition: with the cores busy
    (the loop, the workers), a fifth of the writer's CPU while the run went on (a tree: 3-4 µs
    a task). Read back when the run ends, they cost about as much once, and nothing before.
    A run of more than ``SUMMARY_MAX_TASKS`` tasks ends without a summary (said at INFO):
    its tally would hold too much memory; readers count its tasks from its records.
    """
    tally = RunTally()
    for keys, finishes in scheduler_transitions(conn, run_id):
        tally.add_scheduler_transitions(keys, finishes)
        if len(tally) > SUMMARY_MAX_TASKS:
            logger.info(
                "ledger run %d has more than %d tasks; it ends without a summary (readers "
                "count its tasks from its records)",
                run_id,
                SUMMARY_MAX_TASKS,
            )
            return
    tally.write(conn, run_id)


def scheduler_transitions(
    conn: sqlite3.Connection, run_id: int
) -> Iterator[tuple[Sequence[str], Sequence[str]]]:
    """The keys and finish states of the scheduler's transitions in run ``run_id``, a block
    at a time in seq order, whatever version wrote the blocks; a worker's shipment (a map of
    its bytes as they came) is not unpacked. Tuples, not lists: a third less time unpacking,
    which is most of a pass."""
    blobs = conn.execute(
        "SELECT entries FROM transition_blocks WHERE run_id = ? ORDER BY first_seq", (run_id,)
    )
    for (blob,) in blobs:
        block = msgpack.unpackb(block_bytes(blob), strict_map_key=False, use_list=False)
        if not isinstance(block, dict):  # [entry, recommendations] pairs, before version 6
            ours = [entry for entry, _ in block if entry[6] == "scheduler"]
            yield [entry[1] for entry in ours], [entry[3] for entry in ours]
        elif "columns" in block:
            _, keys, _, finishes, _, _, where, _ = block["columns"]
            scheduler = where.count("scheduler")
            if scheduler == len(where):
                yield keys, finishes
            elif scheduler:  # a block retention rewrote from a worker's shipment has none
                mine = list(map(eq, where, repeat("scheduler")))
                yield list(compress(keys, mine)), list(compress(finishes, mine))


_LOG_ROW_COLUMNS = (
    "run_id",
    "timestamp",
    "level",
    "levelno",
    "logger",
    "message",
    "where",
    "key",
)
_TRANSITION_BLOCK_COLUMNS = (
    "run_id",
    "first_seq",
    "last_seq",
    "first_time",
    "last_time",
    "entries",
)
_EVENT_BLOCK_COLUMNS = ("run_id", "topic", *_TRANSITION_BLOCK_COLUMNS[1:])


def _insert_rows(
    conn: sqlite3.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[int]:
    """Insert ``rows`` with as few statements as SQLite's limit on parameters allows; return
    their row ids (SQLite numbers rows without one max + 1, in order)."""
    ids: list[int] = []
    if not rows:
        return ids
    per_statement = max(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns), 1)
    one_row = f"({_placeholders(columns)})"
    quoted = ", ".join(f'"{column}"' for column in columns)
    head = f"INSERT INTO {table} ({quoted}) VALUES "
    for low in range(0, len(rows), per_statement):
        chunk = rows[low : low + per_statement]
        last = conn.execute(
            head + ", ".join([one_row] * len(chunk)), list(chain.from_iterable(chunk))
        ).lastrowid
        assert last is not None
        ids += range(last - len(chunk) + 1, last + 1)
    return ids


class _TransitionBlocks:
    """The transition blocks of one batch, and the names each mentions."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.names: list[str] = []

    def add(
        self, run_id: int, columns: Sequence[Sequence[Any]], recommendations: list[dict[str, str]]
    ) -> None:
        """Blocks of at most ``_TRANSITIONS_PER_BLOCK`` entries (in seq order) of one run,
        given as the columns of ``_ENTRY_FIELDS``."""
        for low in range(0, len(recommendations), _TRANSITIONS_PER_BLOCK):
            high = low + _TRANSITIONS_PER_BLOCK
            block = [column[low:high] for column in columns]
            self.rows.append(_transition_block_row(run_id, block, recommendations[low:high]))
            self.names.append(_names_of(block, recommendations[low:high]))

    def add_shipment(self, run_id: int, where: str, first_seq: int, shipment: Shipment) -> None:
        """A block of a worker's shipment, its bytes and names as the worker packed them."""
        last_seq = first_seq + shipment.count - 1
        block = shipped_block(where, first_seq, shipment)
        self.rows.append(
            (run_id, first_seq, last_seq, shipment.first_time, shipment.last_time, block)
        )
        self.names.append(shipment.names)

    def insert(self, conn: sqlite3.Connection) -> list[tuple[int, str]]:
        """Insert the blocks; return their ``block_names`` rows (id, names)."""
        ids = _insert_rows(conn, "transition_blocks", _TRANSITION_BLOCK_COLUMNS, self.rows)
        return list(zip(ids, self.names, strict=True))


class _PendingNames:
    """The ``block_names`` rows of committed blocks not in the name index yet (the writer's).

    The index takes them every ``interval`` seconds rather than with each batch: each commit
    made FTS5 a segment of every name in it, merged again later, and a busy key, named in the
    blocks of several batches, went into several segments; written a few batches at once,
    the index's inserts cost the writer a sixth less (a replayed tree: 4.8-5.5 µs a task
    against 5.8-6.1; measured on its own, the index's work up to a third less). ``write``
    inserts them in the caller's transaction when they are due (or ``force``), with the
    highest block id the index now covers (``INDEXED_THROUGH``); readers take the blocks after
    it as candidates.
    ``settle`` keeps the new rows, or forgets the written ones, once the transaction commits:
    a batch that rolls back leaves nothing pending behind.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.rows: list[tuple[int, str]] = []
        #: when the rows waiting are due for the index (``time.monotonic``)
        self.due_at = float("inf")

    def due(self, force: bool = False) -> bool:
        """Whether rows wait that are due for the index (any, with ``force``)."""
        return bool(self.rows) and (force or time.monotonic() >= self.due_at)

    def write(self, conn: sqlite3.Connection, new: list[tuple[int, str]], force: bool) -> bool:
        """Insert the pending rows and ``new`` if they are due; True if they were."""
        rows = self.rows + new
        if not rows or not (force or time.monotonic() >= self.due_at):
            return False
        _insert_rows(conn, "block_names", ("rowid", "names"), rows)
        set_indexed_through(conn, rows[-1][0])
        return True

    def settle(self, new: list[tuple[int, str]], written: bool) -> None:
        """After the commit: nothing is pending if ``write`` wrote it, else ``new`` waits too."""
        if written:
            self.rows = []
            self.due_at = float("inf")
        elif new:
            if not self.rows:
                self.due_at = time.monotonic() + self.interval
            self.rows += new


def indexed_through(conn: sqlite3.Connection) -> int | None:
    """The highest block id the name index covers (later blocks are not in it yet); None for
    a file written before version 9, whose blocks all are."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (INDEXED_THROUGH,)).fetchone()
    return None if row is None else int(row[0])


def set_indexed_through(conn: sqlite3.Connection, block_id: int) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (INDEXED_THROUGH, str(block_id)))


def highest_block_id(conn: sqlite3.Connection) -> int:
    (highest,) = conn.execute("SELECT coalesce(max(block_id), 0) FROM transition_blocks").fetchone()
    return int(highest)


def index_unindexed_blocks(conn: sqlite3.Connection) -> None:
    """Put the blocks the name index does not cover yet into it (those a writer committed
    before it stopped without closing), in the caller's transaction."""
    through = indexed_through(conn) or 0
    unindexed = conn.execute(
        "SELECT block_id, entries FROM transition_blocks WHERE block_id > ? ORDER BY block_id",
        (through,),
    )
    for block_id, blob in unindexed.fetchall():
        try:
            logged = transition_block(blob, strict=True)
        except MalformedShipmentError:
            continue  # what its worker named is unknown; readers skip it too
        index_transition_names(
            conn, block_id, [entry for entry, _ in logged], [recs for _, recs in logged]
        )
    set_indexed_through(conn, max(highest_block_id(conn), through))


def _transition_block_row(
    run_id: int, columns: Sequence[Sequence[Any]], recommendations: Sequence[dict[str, str]]
) -> tuple[Any, ...]:
    """A ``transition_blocks`` row but its id.

    Thousands of transitions a second pass through here, so every step runs in C, with no
    Python code or object per record. The block holds its entries as columns: packing them
    costs a third less than an array per entry did.
    """
    seqs, timestamps = columns[0], columns[5]
    return (
        run_id,
        seqs[0],
        seqs[-1],
        min(timestamps),
        max(timestamps),
        pack_block({"columns": [list(seqs), *columns[1:]], "recommendations": recommendations}),
    )


def _columns_of(entries: Sequence[TransitionEntry]) -> list[Sequence[Any]]:
    """Entries (tuples of ``_ENTRY_FIELDS``) as one list per field: a pass in C per field,
    making no object per entry (transposing with ``zip(*entries)`` made an iterator each, and
    the collector ran on them)."""
    return [list(map(field, entries)) for field in _FIELD_GETTERS]


#: The fields of a transition entry, the columns of a block
_ENTRY_FIELDS = ("seq", "key", "start", "finish", "stimulus_id", "timestamp", "where", "worker")
_FIELD_GETTERS = [itemgetter(index) for index in range(len(_ENTRY_FIELDS))]


def _names_of(columns: Sequence[Sequence[Any]], recommendations: Sequence[dict[str, str]]) -> str:
    """The ``block_names`` text of a block, given as its columns."""
    return names_text(columns[1], columns[4], recommendations)


def _insert_transition_block(
    conn: sqlite3.Connection,
    run_id: int,
    entries: Sequence[TransitionEntry],
    recommendations: Sequence[dict[str, str]],
    block_id: int,
) -> None:
    """Block ``block_id`` (rewritten by retention) and its names."""
    conn.execute(
        "INSERT INTO transition_blocks "
        "(block_id, run_id, first_seq, last_seq, first_time, last_time, entries) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (block_id, *_transition_block_row(run_id, _columns_of(entries), recommendations)),
    )
    index_transition_names(conn, block_id, entries, recommendations)


def index_transition_names(
    conn: sqlite3.Connection,
    block_id: int,
    entries: Sequence[TransitionEntry],
    recommendations: Sequence[dict[str, str]],
) -> None:
    """Index block ``block_id`` under every key and stimulus id its transitions name."""
    conn.execute(
        "INSERT INTO block_names (rowid, names) VALUES (?, ?)",
        (block_id, _names_of(_columns_of(entries), recommendations)),
    )


def _unindex_transition_block(
    conn: sqlite3.Connection, block_id: int, logged: Sequence[Any], legacy_index: bool
) -> None:
    """Take block ``block_id`` (its entries ``logged``) out of the name index.

    ``block_names`` keeps no copy of what it indexed, so a block leaves it by being indexed
    again as a deletion (the same names, the same order); a block written at version 5 or
    before (``legacy_index``: the file has ``transition_names``) is only in the old index."""
    if (
        legacy_index
        and conn.execute("SELECT 1 FROM transition_names WHERE rowid = ?", (block_id,)).fetchone()
    ):
        conn.execute("DELETE FROM transition_names WHERE rowid = ?", (block_id,))
        return
    names = _names_of(_columns_of([entry for entry, _ in logged]), [recs for _, recs in logged])
    conn.execute(
        "INSERT INTO block_names (block_names, rowid, names) VALUES ('delete', ?, ?)",
        (block_id, names),
    )


def _prune_blocks(
    conn: sqlite3.Connection,
    table: str,
    times: tuple[str, str],
    cutoff: float,
    rewrite: Callable[[tuple[Any, ...]], tuple[Any, ...]],
) -> bool:
    """Delete up to ``_PRUNE_BLOCKS`` blocks of ``table`` whose first record (by the ``times``
    columns, first and last) is older than ``cutoff``; one whose last is not is put back under
    its id as ``rewrite(row)`` makes it of its newer records. True if more may remain."""
    first, last = times
    blocks = conn.execute(
        f"SELECT {last}, * FROM {table} WHERE {first} < ? LIMIT ?", (cutoff, _PRUNE_BLOCKS)
    ).fetchall()
    for newest, *row in blocks:
        conn.execute(f"DELETE FROM {table} WHERE block_id = ?", (row[0],))
        if newest >= cutoff:
            conn.execute(
                f"INSERT INTO {table} VALUES ({_placeholders(row)})", (row[0], *rewrite(tuple(row)))
            )
    return len(blocks) == _PRUNE_BLOCKS


def _event_block_row(
    run_id: int, topic: str, stored_events: Sequence[StoredEvent]
) -> tuple[Any, ...]:
    """An ``event_blocks`` row but its id."""
    timestamps = [stored[1] for stored in stored_events]
    return (
        run_id,
        topic,
        stored_events[0][0],
        stored_events[-1][0],
        min(timestamps),
        max(timestamps),
        pack_block(stored_events),
    )


def transition_block(blob: bytes, use_list: bool = True, strict: bool = False) -> list[Any]:
    """A transition block's ``(entry, recommendations)`` pairs, in seq order, whether it holds
    its entries as columns (a map, as written from version 6 on), as a worker shipped them
    (version 8), or as an array of pairs.

    A shipment whose transitions are malformed raises ``MalformedShipmentError`` if
    ``strict``; else it is skipped with a WARNING (what a worker sent must not stop a read).
    """
    logged = msgpack.unpackb(block_bytes(blob), strict_map_key=False, use_list=use_list)
    if not isinstance(logged, dict):
        return list(logged)
    if "shipped" in logged:
        try:
            columns, recommendations = shipped_columns(logged)
        except MalformedShipmentError as error:
            if strict:
                raise
            logger.warning("Skipping a block of the ledger: %s", error)
            return []
    else:
        columns, recommendations = logged["columns"], logged["recommendations"]
    return list(zip(zip(*columns, strict=True), recommendations, strict=True))


def _transition_record(logged: list[Any]) -> TransitionRecord:
    """The record of one block entry, ``[[seq, key, ..., worker], recommendations]``."""
    (seq, key, start, finish, stimulus_id, timestamp, where, worker), recommendations = logged
    return new_record(
        seq, key, start, finish, recommendations, stimulus_id, timestamp, where, worker
    )


def _transition_records(blob: bytes) -> list[TransitionRecord]:
    return [_transition_record(logged) for logged in transition_block(blob)]


def _event_records(topic: str, blob: bytes) -> list[EventRecord]:
    return [record_of(topic, stored) for stored in unpack_block(blob)]


@contextmanager
def _writing_connection(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _schema_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as error:
        if str(error).startswith("database disk image is malformed"):
            raise  # a ledger, damaged: not some other file
        return None
    return int(row[0]) if row else None


def create_or_check_schema(conn: sqlite3.Connection) -> None:
    """Give a new file the schema; bring one of an older readable version up to this one."""
    version = _schema_version(conn)
    if version is None:
        _execute_script(conn, _SCHEMA)
        conn.execute(NAMES_INDEX_SCHEMA)
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        set_indexed_through(conn, 0)
    elif version in (4, 5, 6, 7, 8):  # 5 adds the summaries, 6 the names index, 7 execution
        # blocks, 8 shipped blocks (no table: a version 7 reader would misread them), 9 the
        # name index's lag
        _execute_script(conn, SUMMARY_SCHEMA + EXECUTION_BLOCKS_SCHEMA)
        conn.execute(NAMES_INDEX_SCHEMA)
        conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        set_indexed_through(conn, highest_block_id(conn))  # older writers indexed every one
    elif version != SCHEMA_VERSION:
        raise LedgerError(
            f"ledger schema version {version} is not {SCHEMA_VERSION}; use a new ledger file"
        )
    for option, value in NAMES_INDEX_OPTIONS:
        conn.execute("INSERT INTO block_names (block_names, rank) VALUES (?, ?)", (option, value))


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``script``'s statements in the caller's transaction (``executescript`` commits)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _next_free_seq(conn: sqlite3.Connection) -> int:
    """One past the highest seq any run on this file has used or reserved."""
    (highest,) = conn.execute(
        "SELECT max(coalesce((SELECT max(last_seq) FROM transition_blocks), 0), "
        "coalesce((SELECT max(last_seq) FROM event_blocks), 0), "
        "coalesce((SELECT max(first_seq) - 1 FROM runs), 0))"
    ).fetchone()
    return highest + 1


def prune_chunk(conn: sqlite3.Connection, cutoff: float, names: _PendingNames) -> bool:
    """Delete one chunk of records older than ``cutoff``; return True if more remain.

    A block whose records are all older goes whole; one that straddles the cutoff is
    rewritten with its newer records only. ``names`` waiting for the index go in first.
    """
    conn.execute("BEGIN")
    # a block leaves the index as it went in: every block to prune must be in it first
    indexed = names.write(conn, [], force=True)
    more = False
    blocks = conn.execute(
        "SELECT block_id, run_id, last_time, entries FROM transition_blocks "
        "WHERE first_time < ? LIMIT ?",
        (cutoff, _PRUNE_BLOCKS),
    ).fetchall()
    more = len(blocks) == _PRUNE_BLOCKS
    legacy_index = bool(blocks) and bool(tables_named(conn, "transition_names"))
    for block_id, run_id, last_time, blob in blocks:
        conn.execute("DELETE FROM transition_blocks WHERE block_id = ?", (block_id,))
        try:
            logged_block = transition_block(blob, strict=True)
        except MalformedShipmentError:
            # what a worker indexed it under is unknown: its names stay in the index,
            # pointing at no block (a lookup finds nothing there), rather than a guess
            continue
        _unindex_transition_block(conn, block_id, logged_block, legacy_index)
        if last_time >= cutoff:
            kept = [logged for logged in logged_block if logged[0][5] >= cutoff]
            _insert_transition_block(
                conn,
                run_id,
                [entry for entry, _ in kept],
                [recommendations for _, recommendations in kept],
                block_id,
            )
    events_left = _prune_blocks(
        conn,
        "event_blocks",
        ("first_time", "last_time"),
        cutoff,
        lambda row: _event_block_row(
            row[1], row[2], [stored for stored in unpack_block(row[-1]) if stored[1] >= cutoff]
        ),
    )
    executions_left = _prune_blocks(
        conn,
        "execution_blocks",
        ("first_stop", "last_stop"),
        cutoff,
        lambda row: execution_block_row(
            row[1], [kept for kept in block_executions(row[-1]) if kept[_STOP] >= cutoff]
        ),
    )
    more = more or events_left or executions_left
    for table, time_column in (
        ("logs", "timestamp"),
        ("executions", "stop"),  # rows written before version 7
        ("failures", "timestamp"),
    ):
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} WHERE {time_column} < ? LIMIT ?)",
            (cutoff, _PRUNE_CHUNK),
        ).rowcount
        more = more or deleted == _PRUNE_CHUNK
    for table in SUMMARY_TABLES:  # the summaries of runs that ended before
        deleted = conn.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE run_id IN "
            "(SELECT run_id FROM runs WHERE ended < ?) LIMIT ?)",
            (cutoff, _PRUNE_CHUNK),
        ).rowcount
        more = more or deleted == _PRUNE_CHUNK
    conn.execute("COMMIT")
    names.settle([], indexed)
    return more
