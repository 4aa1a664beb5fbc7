"""One writer per ledger file: an OS lock on a sidecar file, released by the OS if we crash.

Two schedulers writing one SQLite ledger would each number their records from the same highest
seq and interleave them, so the second one is refused at start. The lock is ``flock`` on
``<ledger>.lock`` (not a lock inside SQLite, which readers share): the kernel drops it when the
holder's process ends, however it ends, so a crash never leaves a stale lock behind. The file
holds the holder's pid and host, for the error the next writer gets; a clean close removes it.
Readers (the CLI, the dashboard) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from storied.record.errors import LedgerError, LedgerLockedError


def lock_path_of(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + ".lock")


class WriterLock:
    """Held by the one process allowed to write a ledger file."""

    def __init__(self, ledger_path: Path) -> None:
        self.ledger_path = ledger_path
        self.path = lock_path_of(ledger_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ``LedgerLockedError`` naming the file and the holder's pid."""
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise LedgerError(
                    f"cannot write the ledger {self.ledger_path}: cannot create its lock file "
                    f"{self.path} ({error.strerror}; is the directory read-only?)"
                ) from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LedgerLockedError(
                    f"the ledger {self.ledger_path} is being written by another process "
                    f"({holder}; lock file {self.path}): one scheduler writes a ledger file at a "
                    "time. Stop that scheduler, or give this one another file (--ledger PATH)"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            # the holder removed the file between our open and our lock: lock the new one
            os.close(fd)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname()}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order, so that whoever locks a
        file by that name next locks one nobody else holds)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read_holder(fd: int) -> str:
    """``pid N on HOST`` from the lock file, as far as it can be read."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"
