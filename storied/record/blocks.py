"""How the ledger stores many records in one row: packed with msgpack, compressed with LZ4."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import lz4.block

from storied.record.events import pack_msg, unpack_msg


def pack_block(records: list[Any]) -> bytes:
    """A block's records, msgpack-packed then LZ4-compressed, behind a tag byte.

    Blocks repeat keys, stimulus ids and addresses: LZ4 shrinks them about three times at
    close to a gigabyte a second, and SQLite then inserts, logs and checkpoints a third of
    the bytes.
    """
    return _LZ4_TAG + lz4.block.compress(pack_msg(records))


def unpack_block(blob: bytes) -> Any:
    """A block's records; blocks written before compression (plain msgpack) read as well."""
    return unpack_msg(block_bytes(blob))


def block_bytes(blob: bytes) -> bytes:
    """A block's msgpack bytes, decompressed if it was written compressed."""
    return lz4.block.decompress(blob[1:]) if blob[:1] == _LZ4_TAG else blob


#: the first byte of a compressed block; a plain msgpack block (an array) never starts with
#: one in 0x00-0x7f (a positive fixint)
_LZ4_TAG = b"L"


#: What separates the names of a block in its ``block_names`` row (see ``storied.record.ledger``).
NAME_SEPARATOR = "\x1f"


def names_text(
    keys: Iterable[str], stimulus_ids: Iterable[str], recommendations: Iterable[Mapping[str, str]]
) -> str:
    """The ``block_names`` text of a block's transitions: every key and stimulus id they name,
    once. A key recurs several times in a block (its own entries, recommendations, stimulus
    ids shared by many): a set drops the repeats in C for less than the index's tokenizer
    spent on them, and faster than joining them all. The order does not matter, not even to
    take the block out of the index again (which indexes its names once more, as a deletion):
    the index keeps no positions (``detail=none``)."""
    return NAME_SEPARATOR.join(set(chain(keys, stimulus_ids, chain.from_iterable(recommendations))))


def tables_named(conn: sqlite3.Connection, *names: str) -> set[str]:
    """Which of the tables ``names`` the file has."""
    placeholders = ", ".join("?" for _ in names)
    return {
        name
        for (name,) in conn.execute(
            f"SELECT name FROM sqlite_master WHERE name IN ({placeholders})", names
        )
    }
