"""Ledger files as earlier storied versions wrote them, made from files written now."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from storied.record.executions import block_executions


def make_version_6(path: Path) -> None:
    """Turn a ledger into what version 6 wrote: executions one row each in ``executions``, no
    ``execution_blocks``."""
    with closing(sqlite3.connect(path)) as conn, conn:
        blocks = conn.execute(
            "SELECT run_id, entries FROM execution_blocks ORDER BY block_id"
        ).fetchall()
        conn.executemany(
            "INSERT INTO executions (run_id, key, worker, thread, start, stop, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, *row) for run_id, blob in blocks for row in block_executions(blob)],
        )
        conn.execute("DROP TABLE execution_blocks")
        conn.execute("UPDATE meta SET value = '6' WHERE name = 'schema_version'")
