"""``storied ledger check`` and ``storied ledger recover``: find damage, and save what is left.

A ledger damaged in the middle (a bad disk sector, a copy cut short, a file edited by hand) is
refused when a scheduler opens it (``integrity.check_quickly``). Recovery copies every row that
can still be read, and every block that still decodes, into a new file, table by table; rows are
read by ranges of their ids, and a range SQLite cannot read is split until the unreadable rows
are found. The full-text name index is rebuilt from the blocks rather than copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
from lz4.block import LZ4BlockError

from storied.record.blocks import tables_named
from storied.record.errors import LedgerError
from storied.record.executions import block_executions
from storied.record.integrity import open_for_reading, sqlite_problems
from storied.record.ledger import (
    PAGE_SIZE,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    _schema_version,
    create_or_check_schema,
    highest_block_id,
    index_transition_names,
    set_indexed_through,
    transition_block,
    unpack_block,
)
from storied.record.summary import SUMMARY_TABLES

_CHUNK = 10_000
#: chunks read in a row with nothing in them, past the last row found, before a table whose
#: highest id cannot be read is taken to end
_EMPTY_CHUNKS_AT_END = 8
_BLOCK_TABLES = ("transition_blocks", "event_blocks", "execution_blocks")
#: what each block table's rows say of the records in them, for saying which were lost
_BLOCK_SPANS = {
    "transition_blocks": "first_seq, last_seq",
    "event_blocks": "first_seq, last_seq",
    "execution_blocks": "NULL, NULL",
}
_UNREADABLE = (
    sqlite3.DatabaseError,
    LZ4BlockError,
    msgpack.UnpackException,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
)


@dataclass
class TableRecovery:
    """What became of one table: rows copied, row ids that could not be read, and blocks that
    were read but no longer decode (with the seqs they held, when the row says)."""

    copied: int = 0
    unreadable_ids: list[int] = field(default_factory=list)
    undecodable_blocks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.unreadable_ids) + len(self.undecodable_blocks)


@dataclass
class Recovery:
    source: Path
    target: Path
    tables: dict[str, TableRecovery] = field(default_factory=dict)
    #: tables of the source that could not be read at all, with why
    unreadable_tables: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unreadable_tables and not any(t.lost for t in self.tables.values())

    def describe(self) -> list[str]:
        """One line per table, saying what was copied and what was lost."""
        lines = []
        for name, table in self.tables.items():
            line = f"{name}: {table.copied} rows copied"
            if table.unreadable_ids:
                line += f"; lost unreadable rows with ids {_ranges(table.unreadable_ids)}"
            for block in table.undecodable_blocks:
                span = _span(block["run_id"], block["first_seq"], block["last_seq"])
                line += f"; lost block {block['block_id']} ({span}): it no longer decodes"
            lines.append(line)
        lines += [f"{name}: lost entirely ({why})" for name, why in self.unreadable_tables.items()]
        return lines


def check(path: Path) -> list[str]:
    """Every problem found in the ledger at ``path`` (empty: sound): SQLite's full
    ``integrity_check``, the schema version, and whether every block still decodes."""
    try:
        conn = open_for_reading(path)
    except sqlite3.DatabaseError as error:
        return [f"cannot open: {error}"]
    try:
        try:
            problems = sqlite_problems(conn, "integrity_check(100)")
        except sqlite3.DatabaseError as error:  # too damaged to list: go on to the blocks
            problems = [str(error)]
        try:
            version = _schema_version(conn)
        except sqlite3.DatabaseError as error:
            return [*problems, f"schema version unreadable: {error}"]
        if version is None:
            return [*problems, "not a storied ledger (no schema version)"]
        if version not in READABLE_SCHEMA_VERSIONS:
            readable = ", ".join(map(str, READABLE_SCHEMA_VERSIONS))
            return [*problems, f"schema version {version}; this storied reads {readable}"]
        for table in tables_named(conn, *_BLOCK_TABLES):
            try:
                for block_id, run_id, first_seq, last_seq, blob in conn.execute(
                    f"SELECT block_id, run_id, {_BLOCK_SPANS[table]}, entries FROM {table}"
                ):
                    try:
                        _DECODERS[table](blob)
                    except _UNREADABLE as error:
                        problems.append(
                            f"{table} block {block_id} ({_span(run_id, first_seq, last_seq)}) "
                            f"does not decode: {error}"
                        )
            except sqlite3.DatabaseError as error:
                problems.append(f"{table} cannot be read through: {error}")
        return problems
    finally:
        conn.close()


def recover(source: Path, target: Path) -> Recovery:
    """Copy what can be read of the ledger ``source`` into a new ledger ``target``."""
    if target.exists():
        raise FileExistsError(f"{target} exists: recover into a new file")
    src = open_for_reading(source)
    try:
        try:
            version = _schema_version(src)
        except sqlite3.DatabaseError:
            version = SCHEMA_VERSION  # meta is damaged: assume this storied wrote it
        if version is not None and version not in READABLE_SCHEMA_VERSIONS:
            raise LedgerError(
                f"{source} has ledger schema version {version}; this storied recovers "
                f"versions {', '.join(map(str, READABLE_SCHEMA_VERSIONS))}: use the storied "
                "that wrote it"
            )
        # the new file has this storied's schema: an older file's runs are upgraded on the
        # way, as opening it for writing does (version 6 lacks only the execution blocks, its
        # executions are rows; version 5 also the name index, which recovery builds anew
        # anyway; version 4 also the runs' summaries, which readers then count from the
        # records)
        missing = {4: (*SUMMARY_TABLES, *_SINCE_7), 5: _SINCE_7, 6: _SINCE_7}.get(version or 0, ())
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            dst.execute(f"PRAGMA page_size={PAGE_SIZE}")
            dst.execute("PRAGMA journal_mode=WAL")
            dst.execute("BEGIN")
            create_or_check_schema(dst)
            recovery = Recovery(source, target)
            for table in _tables(dst):
                if table not in missing:
                    _copy_table(src, dst, table, recovery)
            _check_blocks(dst, recovery)
            set_indexed_through(dst, highest_block_id(dst))  # every block is indexed now
            # the copied meta says what the source was; the copy is of this storied's version
            dst.execute(
                "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            dst.execute("COMMIT")
        finally:
            dst.close()
    finally:
        src.close()
    return recovery


def _tables(conn: sqlite3.Connection) -> list[str]:
    """The ledger's own tables (those of this storied's schema), but the name index."""
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND sql NOT LIKE 'CREATE VIRTUAL%' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE 'block_names%' ORDER BY rowid"
        )
    ]


def _copy_table(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str, recovery: Recovery
) -> None:
    columns = [row[1] for row in dst.execute(f"PRAGMA table_info({table})")]
    quoted = ", ".join(f'"{column}"' for column in columns)
    insert = (
        f"INSERT OR REPLACE INTO {table} (rowid, {quoted}) "
        f"VALUES (?, {', '.join('?' for _ in columns)})"
    )
    select = f"SELECT rowid, {quoted} FROM {table} WHERE rowid BETWEEN ? AND ?"
    result = recovery.tables[table] = TableRecovery()
    try:
        low, high = _id_bounds(src, table)
    except sqlite3.DatabaseError as error:
        del recovery.tables[table]
        recovery.unreadable_tables[table] = str(error)
        return
    for rows in _readable_rows(src, select, low, high, result):
        dst.executemany(insert, rows)
        result.copied += len(rows)


def _id_bounds(src: sqlite3.Connection, table: str) -> tuple[int, int | None]:
    """The lowest and highest row id of ``table`` (the highest None when it cannot be read)."""
    try:
        low, high = src.execute(f"SELECT min(rowid), max(rowid) FROM {table}").fetchone()
        return low or 1, high or 0
    except sqlite3.DatabaseError:
        src.execute(f"SELECT 1 FROM {table} LIMIT 0").fetchall()  # a table that is not there
        return 1, None


def _readable_rows(
    src: sqlite3.Connection, select: str, low: int, high: int | None, result: TableRecovery
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows by id ranges of ``_CHUNK``; a range that fails is halved down to single rows."""
    empty_in_a_row = 0
    start = low
    while high is None or start <= high:
        end = start + _CHUNK - 1 if high is None else min(start + _CHUNK - 1, high)
        rows = _read_range(src, select, start, end, result)
        yield rows
        if high is None:
            empty_in_a_row = 0 if rows else empty_in_a_row + 1
            if empty_in_a_row >= _EMPTY_CHUNKS_AT_END:
                return
        start = end + 1


def _read_range(
    src: sqlite3.Connection, select: str, low: int, high: int, result: TableRecovery
) -> list[tuple[Any, ...]]:
    try:
        return src.execute(select, (low, high)).fetchall()
    except sqlite3.DatabaseError:
        if low == high:
            result.unreadable_ids.append(low)
            return []
        middle = (low + high) // 2
        return [
            *_read_range(src, select, low, middle, result),
            *_read_range(src, select, middle + 1, high, result),
        ]


def _check_blocks(dst: sqlite3.Connection, recovery: Recovery) -> None:
    """Drop blocks that were copied but no longer decode; index the names of the others."""
    for table in _BLOCK_TABLES:
        result = recovery.tables.get(table)
        if result is None:
            continue
        blocks = dst.execute(
            f"SELECT block_id, run_id, {_BLOCK_SPANS[table]}, entries FROM {table}"
        ).fetchall()
        for block_id, run_id, first_seq, last_seq, blob in blocks:
            try:
                if table != "transition_blocks":
                    _DECODERS[table](blob)
                else:
                    logged = transition_block(blob, strict=True)
                    index_transition_names(
                        dst,
                        block_id,
                        [entry for entry, _ in logged],
                        [recommendations for _, recommendations in logged],
                    )
            except _UNREADABLE:
                dst.execute(f"DELETE FROM {table} WHERE block_id = ?", (block_id,))
                result.copied -= 1
                result.undecodable_blocks.append(
                    {
                        "block_id": block_id,
                        "run_id": run_id,
                        "first_seq": first_seq,
                        "last_seq": last_seq,
                    }
                )


#: tables of schema version 7 that older versions lack
_SINCE_7 = ("execution_blocks",)
_DECODERS = {
    "transition_blocks": partial(transition_block, strict=True),
    "event_blocks": unpack_block,
    "execution_blocks": block_executions,
}


def _span(run_id: int, first_seq: int | None, last_seq: int | None) -> str:
    """Which records a block held, as far as its row says."""
    return f"run {run_id}" if first_seq is None else f"run {run_id}, seqs {first_seq}-{last_seq}"


def _ranges(ids: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``."""
    spans: list[list[int]] = []
    for number in sorted(ids):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
