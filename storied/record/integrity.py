"""Opening a ledger file safely: read-only where need be, checked, and errors that say why.

SQLite's own messages name neither the file nor what to do ("attempt to write a readonly
database", "database disk image is malformed"); ``ledger_error`` adds both.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storied.record.errors import LedgerCorruptError, LedgerError

#: SQLite messages, as they start, and what they mean for whoever runs storied
_CAUSES = (
    ("database disk image is malformed", None),
    ("file is not a database", None),
    ("attempt to write a readonly database", "the file or its directory is read-only"),
    ("unable to open database file", "its directory is missing or cannot be written"),
    ("database or disk is full", "the filesystem is full"),
    ("disk i/o error", "the disk failed to read or write (full, removed or read-only?)"),
)


def ledger_error(path: Path, error: sqlite3.Error, doing: str) -> LedgerError:
    """``error`` as a ``LedgerError`` naming ``path``, the cause, and what to do about it."""
    message = str(error)
    lowered = message.lower()
    for start, cause in _CAUSES:
        if lowered.startswith(start):
            if cause is None:
                return LedgerCorruptError(f"{doing} {path}: {message}; {_corrupt_advice(path)}")
            return LedgerError(
                f"{doing} {path}: {message} ({cause}; fix that, or use another ledger file)"
            )
    return LedgerError(f"{doing} {path}: {message}")


def _corrupt_advice(path: Path) -> str:
    return (
        f"the file is damaged. `storied ledger check {path}` says where, "
        f"`storied ledger recover {path}` copies what can still be read to a new file"
    )


def check_quickly(conn: sqlite3.Connection, path: Path) -> None:
    """Raise ``LedgerCorruptError`` unless ``PRAGMA quick_check`` finds the file sound.

    It reads every page once (about a second per gigabyte) but skips what
    ``integrity_check`` adds (index contents against their tables): cheap enough for every
    scheduler start, and it catches a file damaged in the middle before records go into it.
    """
    problems = sqlite_problems(conn, "quick_check(5)")
    if problems:
        raise LedgerCorruptError(
            f"refusing to write the ledger {path}: {'; '.join(problems)}; {_corrupt_advice(path)}"
        )


def sqlite_problems(conn: sqlite3.Connection, check: str) -> list[str]:
    """What ``PRAGMA <check>`` reports, a line a problem (none: the file is sound)."""
    lines = [line for (row,) in conn.execute(f"PRAGMA {check}") for line in row.splitlines()]
    return [line for line in lines if line != "ok" and not line.startswith("*** in database")]


def open_for_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection that never writes or locks anything a scheduler needs.

    A WAL file needs its ``-shm`` index, which SQLite creates next to it; where it cannot (the
    file or its directory is read-only: an archive, another user's file), the file is opened as
    immutable instead: no scheduler can be writing a file nobody can write.
    """
    if not path.exists():
        raise FileNotFoundError(f"no ledger at {path}")
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as error:
        conn.close()
        if not any(str(error).startswith(start) for start, _ in _CAUSES[2:4]):
            raise
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    return conn
