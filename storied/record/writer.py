"""The ledger's writer process: SQLite work off the scheduler's GIL.

The scheduler's process is bound by its GIL (event loops, client, ledger all take turns on
it): a writer thread there, packing, indexing and committing about 20 µs of work a task,
made every task wait on it, and cost a reduction tree a fifth of its throughput. The same work
in a process of its own costs the scheduler only what it takes to hand a batch over (pickling
what the ``Ledger``'s thread gathered, a few µs a task) and runs on whatever CPU is free.

``WriterProcess`` starts the process when the ledger's writer thread starts and talks to it
over a socket pair: a batch goes over, ``Written`` comes back once it is committed. The
process is a new interpreter, not a fork: SQLite's state in a forked child (descriptors it
keeps open for the parent's connections) breaks the child's own connection. It imports
``storied.record`` alone, not the whole package (a third of the start-up), ignores Ctrl-C (its
parent decides when it ends), and ends when its parent closes the socket or dies: everything
it was handed is committed by then. Its log records travel back with each reply and are
logged by the parent.
"""

from __future__ import annotations

import ast
import logging
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from storied.record import ledger as ledger_module
from storied.record.integrity import ledger_error
from storied.record.ledger import (
    WRITER_PRAGMAS,
    _insert,
    _PendingNames,
    batch_records,
    prune_chunk,
)

logger = logging.getLogger("storied.record")


class Written(NamedTuple):
    """What the writer process did with a batch."""

    #: records committed
    written: int
    #: records lost to a failed transaction, and why (``error_type``: ``error``)
    lost: int
    error_type: str
    error: str
    traceback: str
    #: the writer process's CPU time so far
    cpu_seconds: float
    #: seconds until the process has work of its own due (names for the index, retention),
    #: for which it needs a message even with nothing new to write
    due_in: float
    #: its log records since the last reply: (level number, message)
    logs: list[tuple[int, str]]


class WriterProcess:
    """The scheduler's side of the writer process (a context manager: leaving it ends it)."""

    def __init__(
        self, path: Path, index_interval: float, retain: float | None, prune_every: float
    ) -> None:
        ours, theirs = socket.socketpair()
        settings = [
            str(path),
            repr(index_interval),
            repr(retain),
            repr(prune_every),
            str(ledger_module.SUMMARY_MAX_TASKS),  # as this process has it (tests lower it)
        ]
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _START, _PACKAGE, str(theirs.fileno()), *settings],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        self.pid = self._process.pid
        self._connection = Connection(ours.detach())

    def write(
        self,
        batch: list[tuple[Any, ...]],
        transitions: list[Any],
        executions: dict[int, list[tuple[Any, ...]]],
        index_now: bool,
    ) -> Written:
        """Have the batch committed; what became of it. A writer process that is gone loses
        the batch, and says so as a failed write would."""
        try:
            message = (batch, transitions, executions, index_now)
            self._connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
            written: Written = pickle.loads(self._connection.recv_bytes())
            return written
        except (EOFError, OSError) as error:
            records = batch_records(batch, transitions, executions)
            gone = f"the ledger's writer process (pid {self.pid}) is gone ({error!r})"
            return Written(0, records, "WriterProcessError", gone, "", 0.0, float("inf"), [])

    def close(self) -> None:
        """End the process once it has committed what it was given, and reap it."""
        self._connection.close()
        self._process.wait()

    def __enter__(self) -> WriterProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


#: the storied package's directory, for the writer process to import ``storied.record`` from
_PACKAGE = str(Path(__file__).resolve().parents[1])
#: what the writer process runs: ``storied`` as a bare package (its ``__init__`` imports the
#: client and the rest), then ``serve``
_START = (
    "import sys, types; package = types.ModuleType('storied'); "
    "package.__path__ = [sys.argv[1]]; sys.modules['storied'] = package; "
    "from storied.record.writer import serve; serve(sys.argv[2:])"
)


def serve(arguments: list[str]) -> None:
    """The writer process: commit each batch that comes, until the parent goes."""
    descriptor, path, index_interval, retain, prune_every, summary_max_tasks = arguments
    ledger_module.SUMMARY_MAX_TASKS = int(summary_max_tasks)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs = _LogKeeper()
    logger.handlers[:] = [logs]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    connection = Connection(int(descriptor))
    writer = _BatchWriter(
        Path(path), float(index_interval), ast.literal_eval(retain), float(prune_every)
    )
    try:
        while True:
            try:
                message = connection.recv_bytes()
            except (EOFError, OSError):
                return  # the scheduler closed the ledger, or died
            written = writer.write(*pickle.loads(message), logs)
            try:
                connection.send_bytes(pickle.dumps(written, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                return  # the scheduler died waiting: what it handed over is committed
    finally:
        writer.conn.close()


class _LogKeeper(logging.Handler):
    """The writer process's log records, kept for its next reply."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.records.append((record.levelno, message))

    def take(self) -> list[tuple[int, str]]:
        taken, self.records = self.records, []
        return taken


class _BatchWriter:
    """The SQLite side: the connection, the open runs it sums up, the names waiting for the
    index, and retention."""

    def __init__(
        self, path: Path, index_interval: float, retain: float | None, prune_every: float
    ) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        for pragma in WRITER_PRAGMAS:
            self.conn.execute(pragma)
        #: the open runs whose summary it stores when they end (those it was told opened)
        self.summed_up: set[int] = set()
        #: names of committed blocks waiting for the name index
        self.names = _PendingNames(index_interval)
        self.retain = retain
        self.prune_every = prune_every
        self.next_prune = time.monotonic()

    def write(
        self,
        batch: list[tuple[Any, ...]],
        transitions: list[Any],
        executions: dict[int, list[tuple[Any, ...]]],
        index_now: bool,
        logs: _LogKeeper,
    ) -> Written:
        """Commit a batch in one transaction (and the names due for the index); then apply
        retention when it is due."""
        written = lost = 0
        error_type = error = trace = ""
        if batch or transitions or executions or self.names.due(index_now):
            records = batch_records(batch, transitions, executions)
            conn = self.conn
            try:
                conn.execute("BEGIN")
                named = _insert(conn, batch, transitions, self.summed_up, executions)
                indexed = self.names.write(conn, named, index_now)
                conn.execute("COMMIT")
                self.names.settle(named, indexed)
                written = records
            except Exception as failure:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                lost = records
                error_type = type(failure).__name__
                error = str(
                    ledger_error(self.path, failure, "cannot write the ledger")
                    if isinstance(failure, sqlite3.Error)
                    else failure
                )
                trace = traceback.format_exc()
        if self.retain is not None and time.monotonic() >= self.next_prune:
            more = self._prune_safely(self.retain)
            self.next_prune = time.monotonic() + (0 if more else self.prune_every)
        return Written(
            written,
            lost,
            error_type,
            error,
            trace,
            time.process_time(),
            self._due_in(),
            logs.take(),
        )

    def _due_in(self) -> float:
        """Seconds until names are due for the index or retention is, whichever comes first."""
        now = time.monotonic()
        due = self.names.due_at if self.names.rows else float("inf")
        if self.retain is not None:
            due = min(due, self.next_prune)
        return max(due - now, 0.0)

    def _prune_safely(self, retain: float) -> bool:
        """Apply retention to one chunk; a failure is logged and retried at the next period."""
        try:
            return prune_chunk(self.conn, time.time() - retain, self.names)
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            logger.exception(
                "ledger %s could not delete records older than %s s", self.path, retain
            )
            return False
