"""The ledger's journal: what the scheduler hands its indexer, appended to files beside the ledger.

The scheduler's process only packs each batch of records with one msgpack call and appends it
to a journal file (a few microseconds a task); the indexer process (``storied.record.indexer``)
turns the journal into SQLite blocks at low priority. Once a batch is in the journal, a crash of
the scheduler loses nothing of it: the next writer of the ledger indexes what is left first.

A journal is a sequence of files ``LEDGER.journal.N`` (``N`` a generation, growing; a writer
starts a new one when the file passes ``ROTATE_BYTES``), each a sequence of frames: a 4-byte
little-endian length, then a msgpack array of queued items (``storied.record.ledger``'s kinds).
A position is ``(generation, offset)``; the ledger's ``meta`` row ``journal_position`` says how
far the indexer has committed, in the same transaction as what it indexed, so no frame is
indexed twice or skipped.
"""

from __future__ import annotations

import gc
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

#: A writer moves on to the next file once its file is this large, so that indexed files go
#: soon (a file a few hundred tasks; opening one costs microseconds).
ROTATE_BYTES = 1024 * 1024
_FRAME_HEADER = struct.Struct("<I")
_META_POSITION = "journal_position"

Position = tuple[int, int]


def journal_files(ledger_path: Path) -> dict[int, Path]:
    """The journal files of ``ledger_path`` by generation."""
    pattern = re.compile(re.escape(ledger_path.name) + r"\.journal\.(\d+)")
    found = {}
    if ledger_path.parent.is_dir():
        for entry in ledger_path.parent.iterdir():
            matched = pattern.fullmatch(entry.name)
            if matched:
                found[int(matched.group(1))] = entry
    return found


def journal_file(ledger_path: Path, generation: int) -> Path:
    return ledger_path.with_name(f"{ledger_path.name}.journal.{generation}")


def stored_position(conn: Any) -> Position:
    """How far the indexer has committed the journal into the ledger ``conn`` holds."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (_META_POSITION,)).fetchone()
    if row is None:
        return (0, 0)
    generation, offset = row[0].split()
    return int(generation), int(offset)


def store_position(conn: Any, position: Position) -> None:
    """Record ``position`` in the ledger, in the caller's transaction."""
    conn.execute(
        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
        (_META_POSITION, f"{position[0]} {position[1]}"),
    )


def pending_bytes(ledger_path: Path, position: Position) -> int:
    """Bytes of journal at or past ``position``: written, not yet indexed."""
    pending = 0
    for generation, path in journal_files(ledger_path).items():
        if generation >= position[0]:
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # indexed and removed meanwhile
                continue
            pending += size - (position[1] if generation == position[0] else 0)
    return pending


def _pack_default(value: Any) -> Any:
    """What msgpack cannot pack itself: the seqs of a shipment (a range)."""
    if isinstance(value, range):
        return list(value)
    raise TypeError(f"cannot journal {type(value).__name__}")


class JournalWriter:
    """Appends frames to the journal files of one ledger, moving on to a new file as one grows."""

    def __init__(self, ledger_path: Path, generation: int) -> None:
        self.ledger_path = ledger_path
        self._packer = msgpack.Packer(default=_pack_default)
        self._open(generation)

    def _open(self, generation: int) -> None:
        self.generation = generation
        self._fd = os.open(
            journal_file(self.ledger_path, generation), os.O_WRONLY | os.O_CREAT | os.O_APPEND
        )
        self.offset = os.fstat(self._fd).st_size

    @property
    def path(self) -> Path:
        """The file frames go to now."""
        return journal_file(self.ledger_path, self.generation)

    @property
    def position(self) -> Position:
        """Where the next frame goes: everything before it is in the journal."""
        return self.generation, self.offset

    def append(self, items: list[Any]) -> None:
        """Write one frame of ``items``; on a failed write (a full disk) the file is cut back to
        where it was, so that the journal never holds half a frame, and the error raised."""
        payload = self._packer.pack(items)
        frame = _FRAME_HEADER.pack(len(payload)) + payload
        try:
            written = 0
            while written < len(frame):
                written += os.write(self._fd, frame[written:])
        except OSError:
            os.ftruncate(self._fd, self.offset)
            raise
        self.offset += len(frame)
        if self.offset >= ROTATE_BYTES:
            old = self._fd
            self._open(self.generation + 1)  # exists before the old one's last frame is read
            os.close(old)

    def close(self) -> None:
        os.close(self._fd)


class JournalReader:
    """Reads whole frames from ``position`` on, across the journal's files in order."""

    def __init__(self, ledger_path: Path, position: Position) -> None:
        self.ledger_path = ledger_path
        self.position = position
        #: files read to their end and left for a higher generation: delete once committed
        self.finished: list[Path] = []
        #: bytes of frames that were never finished (a writer killed mid-write)
        self.torn = 0

    def read(self, max_bytes: int) -> list[list[Any]]:
        """The items of the whole frames after ``position`` (about ``max_bytes`` of them, at
        least one frame); ``position`` moves past them. A frame still being written is left
        for later."""
        items: list[list[Any]] = []
        budget = max_bytes
        while budget > 0:
            generation, offset = self.position
            files = journal_files(self.ledger_path)
            current = files.get(generation)
            frames, used = _whole_frames(current, offset, budget)
            if used:
                items += frames
                budget -= used
                self.position = (generation, offset + used)
                continue
            later = [found for found in files if found > generation]
            if not later:
                break
            # a writer has moved on, so this file is whole (the next one is opened after this
            # one's last frame was written); bytes left in it are a torn frame of a writer
            # that died mid-write, which ``torn`` counts
            if current is not None:
                self.torn += current.stat().st_size - offset
                self.finished.append(current)
            self.position = (min(later), 0)
        return items

    def drop_tail(self) -> int:
        """Once the writer is gone: give up the bytes after ``position`` (a frame it did not
        finish); they count in ``torn``, and their file is finished. Returns how many."""
        generation, offset = self.position
        current = journal_files(self.ledger_path).get(generation)
        if current is None:
            return 0
        tail = current.stat().st_size - offset
        self.torn += tail
        self.finished.append(current)
        self.position = (generation + 1, 0)
        return tail


def _whole_frames(path: Path | None, offset: int, budget: int) -> tuple[list[list[Any]], int]:
    """The items of the whole frames in ``path`` from ``offset`` on (about ``budget`` bytes of
    them; a larger first frame is read whole), and the bytes they took."""
    if path is None:
        return [], 0
    with open(path, "rb") as journal:
        journal.seek(offset)
        data = journal.read(budget)
        if len(data) >= _FRAME_HEADER.size:
            (length,) = _FRAME_HEADER.unpack_from(data)
            if _FRAME_HEADER.size + length > len(data):
                data += journal.read(_FRAME_HEADER.size + length - len(data))
    items: list[list[Any]] = []
    used = 0
    with _collector_paused():
        while used + _FRAME_HEADER.size <= len(data):
            (length,) = _FRAME_HEADER.unpack_from(data, used)
            end = used + _FRAME_HEADER.size + length
            if end > len(data):
                break
            # tuples, not lists: half the time to unpack, and nothing needs them changed
            frame = data[used + _FRAME_HEADER.size : end]
            items += msgpack.unpackb(frame, strict_map_key=False, use_list=False)
            used = end
    return items, used


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Unpacking a frame makes tens of thousands of containers, none in a cycle: the
    collector's passes over them took two thirds of the unpacking time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
