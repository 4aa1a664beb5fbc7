"""Task logs (``worker.capture-task-logs``): what a running task logs or prints, with its key.

While a worker's task runs on a thread, records of any logger (not ``storied.*``: those are
captured anyway) and whole lines the thread writes to ``sys.stdout``/``sys.stderr`` go to that
worker's ``LogCapture`` with the task's key, so into ``get_worker_logs`` and, with a durable
scheduler, the ledger. Each thread says which task it runs (a thread-local), so several threads
per worker, or several workers per process, keep their tasks apart. The streams still print as
before. Off by default; when off, nothing is installed and tasks run exactly as without it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from storied.record.logcapture import LogCapture

_current = threading.local()  # .capture, .key and .partial (unfinished lines) of a task thread


@contextmanager
def task_logs(capture: LogCapture, key: str) -> Iterator[None]:
    """Tag what the calling thread logs and prints with ``key`` while the task runs."""
    _current.capture, _current.key, _current.partial = capture, key, {}
    try:
        yield
    finally:
        partial: dict[str, str] = _current.partial
        _current.capture = None
        for stream_name, text in partial.items():
            if text:
                _keep_line(capture, key, stream_name, text)


def _keep_line(capture: LogCapture, key: str, stream_name: str, line: str) -> None:
    record = logging.LogRecord(stream_name, logging.INFO, "", 0, line, None, None)
    capture.task_record(record, key)


class _TaskRecords(logging.Handler):
    """On the root logger: hands a task thread's records to its worker's capture."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = getattr(_current, "capture", None)
        if capture is not None and not record.name.startswith("storied"):
            capture.task_record(record, _current.key)


class _TeeStream:
    """Stands in for ``sys.stdout``/``sys.stderr``: writes through, and keeps a task thread's
    whole lines as records of the logger "stdout"/"stderr"."""

    def __init__(self, original: TextIO, name: str) -> None:
        self.original = original
        self.name = name

    def write(self, text: str) -> int:
        written = self.original.write(text)
        capture = getattr(_current, "capture", None)
        # a logging handler echoing a record to the console is not the task printing
        if capture is not None and sys._getframe(1).f_globals.get("__name__") != "logging":
            lines = (_current.partial.get(self.name, "") + text).split("\n")
            _current.partial[self.name] = lines.pop()
            for line in lines:
                _keep_line(capture, _current.key, self.name, line)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_install_lock = threading.Lock()
_users = 0
_handler = _TaskRecords()


def install() -> None:
    """Start capturing task logs in this process (counted: one call per worker using it)."""
    global _users
    with _install_lock:
        _users += 1
        if _users == 1:
            logging.getLogger().addHandler(_handler)
            sys.stdout = _TeeStream(sys.stdout, "stdout")  # type: ignore[assignment]
            sys.stderr = _TeeStream(sys.stderr, "stderr")  # type: ignore[assignment]


def uninstall() -> None:
    """One worker stops using it; the last one puts the streams back (unless replaced since)."""
    global _users
    with _install_lock:
        _users -= 1
        if _users:
            return
        logging.getLogger().removeHandler(_handler)
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, _TeeStream):
                setattr(sys, name, stream.original)
