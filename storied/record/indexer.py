"""The ledger's indexer: a low-priority process that turns the journal into the SQLite file.

The scheduler's process appends what it records to the journal (``storied.record.journal``)
and goes on; this process, started by the scheduler's ``Ledger`` at ``os.nice(19)``, reads the
journal and does the SQLite work (blocks, LZ4, the name index, executions, the run's tally and
summary, retention), so that on a machine whose cores the cluster keeps busy the ledger's CPU
comes out of idle time rather than the cluster's throughput. Under full load it lags; it
catches up when the CPU frees, and ``Ledger.flush`` waits for it.

It talks to its ledger over its standard streams: any byte on stdin wakes it (a flush waits),
EOF means the writer is gone (closed or crashed): it indexes what is left and exits. After
each pass it writes a msgpack map to stdout: how far it has indexed, records written and
dropped, its CPU, the latest write error and the log records of ``storied.record`` it made, which
the ledger logs again in the scheduler's process. Run by hand (``python -m
storied.record.indexer LEDGER`` with stdin closed) it indexes a leftover journal and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import logging
import os
import select
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from storied.record.integrity import WriteErrorLog
from storied.record.journal import JournalReader, store_position, stored_position
from storied.record.ledger import (
    END_RUN,
    FLUSH_WAITS,
    FOLLOWED,
    RUN_START,
    WRITER_PRAGMAS,
    insert_batch,
    prune_chunk,
    record_count,
)
from storied.record.summary import SUMMARY_MAX_TASKS, RunTally

logger = logging.getLogger("storied.record")

#: Journal bytes read into one transaction (a few thousand tasks)
_BATCH_BYTES = 8 * 1024 * 1024
#: The indexer's niceness while nobody waits for it
_NICE = 19


class Indexer:
    """Indexes a ledger's journal into the ledger file, one transaction per pass."""

    def __init__(
        self,
        path: Path,
        *,
        retain: float | None = None,
        prune_every: float = 60.0,
        summary_max_tasks: int = SUMMARY_MAX_TASKS,
    ) -> None:
        self.path = path
        self.retain = retain
        self.prune_every = prune_every
        self.summary_max_tasks = summary_max_tasks
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            self.conn.execute(pragma)
        self.reader = JournalReader(path, stored_position(self.conn))
        #: each run's tally, from its start in the journal on (a run whose start this indexer
        #: did not see, after a crash, ends without a summary, as it would have)
        self.tallies: dict[int, RunTally] = {}
        self.written = 0
        self.dropped = 0
        self.errors = WriteErrorLog(logger)
        self._next_prune = time.monotonic()

    def index(self, between: Callable[[], object] = lambda: None) -> bool:
        """Commit whatever whole frames the journal holds, calling ``between`` after each
        transaction; True if there were any."""
        found = False
        while True:
            items = self.reader.read(_BATCH_BYTES)
            if not items and not self.reader.finished:
                return found
            found = True
            self._commit(items)
            between()

    def _commit(self, items: list[list[Any]]) -> None:
        batch, followed = [], []
        for item in items:
            kind = item[0]
            if kind == FOLLOWED:
                followed.append((item[1], item[2], item[3]))
            elif kind == RUN_START:
                self.tallies[item[1]] = RunTally()
            else:
                batch.append(item)
        count = record_count(items)
        conn = self.conn
        try:
            conn.execute("BEGIN")
            ends = [item for item in batch if item[0] == END_RUN]
            insert_batch(
                conn, [item for item in batch if item[0] != END_RUN], followed, self.tallies
            )
            self._forget_large_tallies()  # before a run's end stores its summary
            insert_batch(conn, ends, (), self.tallies)
            store_position(conn, self.reader.position)
            conn.execute("COMMIT")
            self.written += count
        except Exception as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.dropped += count
            self.errors.report(self.path, error, count)
            for item in batch:  # the run's end still ends its tally
                if item[0] == END_RUN:
                    self.tallies.pop(item[1], None)
        for finished in self.reader.finished:
            finished.unlink(missing_ok=True)
        self.reader.finished.clear()

    def finish(self) -> None:
        """The writer is gone: index what is left, give up a frame it did not finish, close."""
        self.index()
        torn = self.reader.drop_tail()
        if torn:
            logger.warning(
                "ledger %s: the journal ended in %d bytes of a batch its writer did not finish "
                "writing (it was killed mid-write); they are lost",
                self.path,
                torn,
            )
        self._commit([])
        self.conn.close()

    def prune_when_due(self) -> None:
        """Apply retention to one chunk every ``prune_every`` seconds (at once while more is
        left); a failure is logged and tried again at the next period."""
        if self.retain is None or time.monotonic() < self._next_prune:
            return
        try:
            more = prune_chunk(self.conn, time.time() - self.retain)
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            logger.exception(
                "ledger %s could not delete records older than %s s", self.path, self.retain
            )
            more = False
        self._next_prune = time.monotonic() + (0 if more else self.prune_every)

    def _forget_large_tallies(self) -> None:
        """Stop summing up runs of more than ``summary_max_tasks`` tasks: their tally would
        hold too much memory; readers count them from the records."""
        for run_id, tally in list(self.tallies.items()):
            if len(tally) > self.summary_max_tasks:
                del self.tallies[run_id]
                logger.info(
                    "ledger %s: run %d has more than %d tasks; it ends without a summary "
                    "(readers count its tasks from its records)",
                    self.path,
                    run_id,
                    self.summary_max_tasks,
                )


class _Forwarded(logging.Handler):
    """Keeps this process's ``storied.record`` records, formatted, for the next report."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str]] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, self.format(record)))


def _report(out: int, indexer: Indexer, forwarded: _Forwarded) -> None:
    """Tell the ledger how far the indexer got (on file descriptor ``out``); a ledger that is
    gone (its scheduler was killed) hears nothing, and the indexer goes on to the end."""
    report = {
        "position": list(indexer.reader.position),
        "written": indexer.written,
        "dropped": indexer.dropped,
        "cpu": time.process_time(),
        "error": indexer.errors.latest,
        "logs": forwarded.records,
    }
    forwarded.records = []
    data = memoryview(msgpack.packb(report))
    with contextlib.suppress(BrokenPipeError):
        while data:
            data = data[os.write(out, data) :]


class _Wake:
    """What the writer says on the indexer's stdin: a new frame, a flush that waits (then the
    indexer runs at nice 0 until the pass is done, where allowed), or EOF (the writer is gone:
    the last pass, at nice 0 too, for a ``close`` waits for it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writer_alive = True
        self.waited_for = False

    def wait(self, timeout: float) -> None:
        if select.select([self.fd], [], [], timeout)[0]:
            self._read()

    def poll(self) -> None:
        """Between transactions: a flush that came meanwhile speeds up the rest of the pass."""
        if self.writer_alive and select.select([self.fd], [], [], 0)[0]:
            self._read()

    def _read(self) -> None:
        told = os.read(self.fd, 65536)
        self.writer_alive = bool(told)
        if not told or FLUSH_WAITS in told:
            self.waited_for = True
            _set_nice(0)

    def served(self) -> None:
        if self.waited_for:
            self.waited_for = False
            _set_nice(_NICE)


def _set_nice(value: int) -> None:
    """Run at nice ``value``: 19 (on what the cluster leaves of the CPU) is always allowed; back
    to 0 while a flush waits only with the privilege to (root, or ``RLIMIT_NICE``), else the
    indexer stays at 19 and the flush waits longer."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, value)


def _one_indexer_at_a_time(ledger: Path) -> Path:
    """Wait for the indexer of a scheduler that died to finish before reading where to start
    (two would index the same frames twice): an ``flock`` on ``LEDGER.indexer.lock``, held
    until this process ends. Returns the lock file, for the holder to remove when it is done
    (a waiter that locked the removed file sees it is gone and locks the new one)."""
    path = ledger.with_name(ledger.name + ".indexer.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path
        except FileNotFoundError:
            pass
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument(
        "--settings", default="{}", help="JSON: retain, prune_every, summary_max_tasks"
    )
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    _set_nice(_NICE)
    # What the indexer makes holds no cycles (records, blocks, the runs' tallies), and the
    # collector's passes over it took a sixth of the indexer's CPU (replayed tree, 50 -> 42 µs
    # a task)
    gc.disable()
    lock = _one_indexer_at_a_time(args.ledger)
    forwarded = _Forwarded()
    logger.addHandler(forwarded)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the ledger logs them again, in the scheduler's process
    prune_every = settings.get("prune_every", 60.0)
    indexer = Indexer(
        args.ledger,
        retain=settings.get("retain"),
        prune_every=prune_every,
        summary_max_tasks=settings.get("summary_max_tasks", SUMMARY_MAX_TASKS),
    )
    out = sys.stdout.fileno()
    wake = _Wake(sys.stdin.fileno())
    while wake.writer_alive:
        wake.wait(prune_every)
        indexed = indexer.index(between=wake.poll)
        indexer.prune_when_due()
        if indexed or wake.waited_for:
            _report(out, indexer, forwarded)
        if wake.writer_alive:
            wake.served()
    indexer.finish()
    lock.unlink()
    _report(out, indexer, forwarded)


if __name__ == "__main__":
    main()
