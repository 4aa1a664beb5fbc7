"""A logging handler that keeps a process's recent log records for ``get_*_logs`` and the ledger."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

DEFAULT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


@dataclass(frozen=True, slots=True)
class LogRecordEntry:
    """A log record reduced to plain data, so it can be shipped, stored and queried."""

    timestamp: float
    level: str  # levelname, e.g. "WARNING"
    levelno: int
    logger: str
    message: str  # the message with any traceback appended
    where: str  # "scheduler" or a worker address


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
        self._captured: deque[tuple[LogRecordEntry, str]] = deque(maxlen=maxlen)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatted = self.format(record)  # also fills record.exc_text for the entry below
            message = record.getMessage()
            if record.exc_text:
                message = f"{message}\n{record.exc_text}"
            entry = LogRecordEntry(
                record.created, record.levelname, record.levelno, record.name, message, self.where
            )
            self._captured.append((entry, formatted))
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
