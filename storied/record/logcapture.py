"""A logging handler that keeps a process's recent log records for ``get_*_logs`` and the ledger.

Every ``storied.*`` logger is captured (``storied.comm``, ``storied.record``, ``storied.nanny``,
...), at the levels the logging config sets. One process may host a scheduler and workers (a
LocalCluster): records of ``storied.scheduler*`` go to the scheduler's capture, those of
``storied.worker*`` to the workers', and the rest to the scheduler's if the process has one, else
to the workers', so that each record reaches the ledger once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

DEFAULT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
#: What a task logged or printed (``worker.capture-task-logs``) names the task.
TASK_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - task %(storied_task)s - %(message)s"


@dataclass(frozen=True, slots=True)
class LogRecordEntry:
    """A log record reduced to plain data, so it can be shipped, stored and queried."""

    timestamp: float
    level: str  # levelname, e.g. "WARNING"
    levelno: int
    logger: str
    message: str  # the message with any traceback appended
    where: str  # "scheduler" or a worker address
    key: str | None = None  # the task that logged or printed it (``worker.capture-task-logs``)

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON shows it, one shape everywhere: ``storied logs --json`` (which
        adds the ``run_id``), the dashboard's ``/api/v1/logs`` and ``Client.get_task_logs``."""
        return {
            "timestamp": self.timestamp,
            "level": self.level,
            "levelno": self.levelno,
            "logger": self.logger,
            "message": self.message,
            "where": self.where,
            "key": self.key,
        }

    def as_list(self) -> list[Any]:
        """The fields in order, as the wire and the ledger's ``logs`` table carry them."""
        return [
            self.timestamp,
            self.level,
            self.levelno,
            self.logger,
            self.message,
            self.where,
            self.key,
        ]


def logger_matches(name: str, wanted: str) -> bool:
    """Whether logger ``name`` is ``wanted`` or one of its children, as ``logging`` nests them
    (``storied.worker`` holds ``storied.worker.state``, not ``storied.workers``)."""
    return name == wanted or name.startswith(f"{wanted}.")


def newer_than(kept: deque[Any], total: int, count: int) -> list[Any]:
    """The items of ``kept`` (the newest of ``total`` ever appended) that came after the first
    ``count``, oldest first; those fallen out of ``kept`` meanwhile are gone."""
    newer = list(islice(reversed(kept), max(total - count, 0)))
    newer.reverse()
    return newer


class LogCapture(logging.Handler):
    """Keeps the newest ``maxlen`` records of the loggers it is attached to."""

    def __init__(
        self,
        maxlen: int,
        where: str,
        on_record: Callable[[LogRecordEntry], None] | None = None,
    ) -> None:
        """``on_record`` sees every entry as it is captured (the Record uses it to persist)."""
        super().__init__()
        self.where = where
        self.on_record = on_record
        self.setFormatter(logging.Formatter(DEFAULT_FORMAT))
        self._task_formatter = logging.Formatter(TASK_FORMAT)
        self._captured: deque[tuple[LogRecordEntry, str]] = deque(maxlen=maxlen)
        #: records captured so far, those fallen out included: a tail's cursor
        self.captured = 0

    def emit(self, record: logging.LogRecord) -> None:
        self._keep(record, None)

    def task_record(self, record: logging.LogRecord, key: str) -> None:
        """Keep a record that task ``key`` logged or printed, tagged with its key."""
        with self.lock:  # type: ignore[union-attr]  # Handler.createLock made it
            self._keep(record, key)

    def _keep(self, record: logging.LogRecord, key: str | None) -> None:
        try:
            if key is None:
                formatted = self.format(record)  # also fills record.exc_text for the entry
            else:
                record.storied_task = key
                formatted = self._task_formatter.format(record)
            message = record.getMessage()
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            entry = LogRecordEntry(
                record.created,
                record.levelname,
                record.levelno,
                record.name,
                message,
                self.where,
                key,
            )
            self._captured.append((entry, formatted))
            self.captured += 1
            if self.on_record is not None:
                self.on_record(entry)
        except Exception:
            self.handleError(record)

    def get(self, n: int | None = None) -> list[tuple[str, str]]:
        """``(levelname, formatted message)`` pairs, newest first, as dask's ``get_logs``."""
        newest_first = islice(reversed(self._captured), n)
        return [(entry.level, formatted) for entry, formatted in newest_first]

    def entries(self) -> list[LogRecordEntry]:
        """The captured entries, oldest first."""
        return [entry for entry, _ in self._captured]

    def entries_after(self, count: int) -> tuple[list[LogRecordEntry], int]:
        """The entries captured after the first ``count`` still kept, oldest first, and the
        count to ask from next time (records may arrive from any thread: read under the
        handler's lock)."""
        with self.lock:  # type: ignore[union-attr]  # Handler.createLock made it
            newer = newer_than(self._captured, self.captured, count)
            return [entry for entry, _ in newer], self.captured

    def attach(self, role: str) -> None:
        """Capture this process's ``storied.*`` records as its ``role``, "scheduler" or
        "worker"."""
        _ROUTER.captures.append((role, self))
        if _ROUTER not in _STORIED.handlers:
            _STORIED.addHandler(_ROUTER)

    def detach(self) -> None:
        _ROUTER.captures = [(role, c) for role, c in _ROUTER.captures if c is not self]
        if not _ROUTER.captures:
            _STORIED.removeHandler(_ROUTER)


class _Router(logging.Handler):
    """On the "storied" logger: hands each record to the captures that own it."""

    def __init__(self) -> None:
        super().__init__()
        self.captures: list[tuple[str, LogCapture]] = []

    def emit(self, record: logging.LogRecord) -> None:
        captures = self.captures
        name = record.name
        if name.startswith("storied.scheduler"):
            owner = "scheduler"
        elif name.startswith("storied.worker"):
            owner = "worker"
        else:
            owner = "scheduler" if any(role == "scheduler" for role, _ in captures) else "worker"
        for role, capture in captures:
            if role == owner:
                capture.handle(record)


_STORIED = logging.getLogger("storied")
_ROUTER = _Router()
