"""Length-prefixed frames, decoded without any I/O so the decoder can be fuzzed directly.

Every message is a frame: a 4-byte big-endian length, then that many bytes. Usually these are
a msgpack payload: a *plain* message, as all control messages are. An empty frame carries no
message and is skipped: a plain-TCP client opens with ``PLAIN_OPENING`` (two of them), bytes
that are no TLS record, so a TLS listener fails its handshake at once instead of both sides
waiting for the other to speak first.

A message *with buffers* is a frame whose first byte is ``0xc1`` (a byte msgpack never uses)
followed by a 4-byte count of buffers, an 8-byte length per buffer and the msgpack header;
right after the frame come the buffers' raw bytes, back to back. Large data (pickle protocol
5 out-of-band buffers: numpy arrays, pandas columns, big ``bytes``) travels this way, never
copied into the header.

``max_frame_size`` bounds every frame, so it bounds what must be held before a message can be
understood; buffers themselves have no ceiling. The decoder hands out the destination buffer
itself (``get_buffer``), so the network layer reads straight into memory allocated once at
its final size, in whatever chunks the socket delivers. Buffers are refused before the
handshake (``accept_buffers``), so a stranger cannot make us allocate.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from typing import Any

_HEADER = struct.Struct("!I")
_COUNT = struct.Struct("!I")
HEADER_SIZE = _HEADER.size
#: first byte of a frame announcing buffers; never the first byte of a msgpack payload
WITH_BUFFERS = 0xC1
_BUFFER_LIST_AT = 1 + _COUNT.size
DEFAULT_MAX_FRAME_SIZE = 256 * 2**20
#: what a plain-TCP client sends first: two empty frames, 8 bytes, more than a TLS record
#: header (5 bytes) and never a valid one (a record's type is never 0)
PLAIN_OPENING = bytes(2 * HEADER_SIZE)
_SCRATCH_SIZE = 64 * 1024

#: what ``FrameDecoder`` yields: a plain payload, or a header with its buffers
Frame = bytes | tuple[bytes, list[Any]]


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the protocol; the connection must be closed."""


def encode_frame(payload: bytes) -> bytes:
    """Prefix a plain message's ``payload`` with its length."""
    return _HEADER.pack(len(payload)) + payload


def encode_frames(header: bytes, buffers: Sequence[Any]) -> list[Any]:
    """A message with buffers, as pieces to write in order; the buffers are not copied."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    frame_size = len(header) + _BUFFER_LIST_AT + 8 * len(views)
    lengths = struct.pack(f"!{len(views)}Q", *(view.nbytes for view in views))
    prefix = _HEADER.pack(frame_size) + bytes((WITH_BUFFERS,)) + _COUNT.pack(len(views))
    return [prefix + lengths + header, *views]


class FrameDecoder:
    """Turns a byte stream into messages; a pure object in the style of ``asyncio``'s
    ``BufferedProtocol``: ``get_buffer`` says where the next bytes go, ``buffer_updated``
    says how many arrived and returns every message they complete.

    Messages with buffers are refused unless ``accept_buffers`` (set once the peer is known):
    their buffers are allocated at the size the peer announces.
    """

    __slots__ = (
        "_buffers",
        "_end",
        "_filled",
        "_header",
        "_index",
        "_need",
        "_scratch",
        "_start",
        "accept_buffers",
        "max_frame_size",
    )

    def __init__(
        self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, accept_buffers: bool = False
    ) -> None:
        self.max_frame_size = max_frame_size
        self.accept_buffers = accept_buffers
        self._scratch = bytearray(_SCRATCH_SIZE)
        self._start = 0
        self._end = 0
        #: bytes the message at ``_start`` needs in scratch before it can be parsed
        self._need = HEADER_SIZE
        #: while filling a message's buffers: its header, buffers, current one and its fill
        self._header = b""
        self._buffers: list[Any] | None = None
        self._index = 0
        self._filled = 0

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole message."""
        if self._buffers is None:
            return self._end - self._start
        done = sum(len(b) for b in self._buffers[: self._index]) + self._filled
        return len(self._header) + done

    def get_buffer(self) -> memoryview:
        """Where the next received bytes should be written (never empty)."""
        if self._buffers is not None:
            return memoryview(self._buffers[self._index])[self._filled :]
        capacity = len(self._scratch)
        if capacity - self._end < max(self._need - (self._end - self._start), 1):
            self._make_room()
        return memoryview(self._scratch)[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Frame]:
        """``nbytes`` were written into the last buffer from ``get_buffer``."""
        frames: list[Frame] = []
        if self._buffers is not None:
            self._filled += nbytes
            self._finish_buffers(frames)
        else:
            self._end += nbytes
            self._parse(frames)
        return frames

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes and return every message they complete (copies ``data``)."""
        frames: list[Frame] = []
        view = memoryview(data)
        while view:
            target = self.get_buffer()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            target.release()
            view = view[n:]
            frames += self.buffer_updated(n)
        return frames

    def _make_room(self) -> None:
        """Move the unparsed bytes to the front of a scratch buffer big enough for ``_need``.

        A new bytearray rather than resizing: the caller may still hold a view of the old one.
        """
        pending = self._end - self._start
        size = max(_SCRATCH_SIZE, self._need, pending + 1)
        if size == len(self._scratch) and self._start:
            self._scratch[:pending] = self._scratch[self._start : self._end]
        else:
            scratch = bytearray(size)
            scratch[:pending] = self._scratch[self._start : self._end]
            self._scratch = scratch
        self._start, self._end = 0, pending

    def _parse(self, frames: list[Frame]) -> None:
        scratch = self._scratch
        while True:
            start, available = self._start, self._end - self._start
            if available < HEADER_SIZE:
                self._need = HEADER_SIZE
                break
            (size,) = _HEADER.unpack_from(scratch, start)
            self._check(size)
            self._need = HEADER_SIZE + size
            if available < self._need:
                break
            body = start + HEADER_SIZE
            end = start + self._need
            if not size:
                self._start = end
                continue
            if scratch[body] != WITH_BUFFERS:
                frames.append(bytes(scratch[body:end]))
                self._start = end
                continue
            if not self.accept_buffers:
                raise ProtocolError("a message with buffers before the handshake completed")
            lengths_at = body + _BUFFER_LIST_AT
            count = _COUNT.unpack_from(scratch, body + 1)[0] if size >= _BUFFER_LIST_AT else -1
            if count < 0 or lengths_at + 8 * count > end:
                raise ProtocolError("malformed message: its list of buffers does not fit its frame")
            lengths = struct.unpack_from(f"!{count}Q", scratch, lengths_at)
            self._header = bytes(scratch[lengths_at + 8 * count : end])
            self._start = end
            self._buffers = [_allocate(length) for length in lengths]
            self._index = self._filled = 0
            self._take_from_scratch()
            self._finish_buffers(frames)
            if self._buffers is not None:
                break
        if self._start == self._end:
            self._start = self._end = 0
            if len(scratch) > _SCRATCH_SIZE:
                self._scratch = bytearray(_SCRATCH_SIZE)

    def _take_from_scratch(self) -> None:
        """Bytes of the buffers that arrived together with the header."""
        assert self._buffers is not None
        for index in range(len(self._buffers)):
            available = self._end - self._start
            if not available:
                break
            buffer = self._buffers[index]
            n = min(len(buffer), available)
            buffer[:n] = self._scratch[self._start : self._start + n]
            self._start += n
            self._index, self._filled = index, n

    def _finish_buffers(self, frames: list[Frame]) -> None:
        """Step past filled buffers; when all are, the message is whole."""
        buffers = self._buffers
        assert buffers is not None
        while self._index < len(buffers) and self._filled == len(buffers[self._index]):
            self._index += 1
            self._filled = 0
        if self._index == len(buffers):
            frames.append((self._header, buffers))
            self._header, self._buffers = b"", None
            self._need = HEADER_SIZE

    def _check(self, size: int) -> None:
        if size > self.max_frame_size:
            raise ProtocolError(
                f"frame of {size} bytes exceeds the maximum of {self.max_frame_size} bytes"
            )


#: buffers this large are fresh anonymous memory: no zero-filling pass (the kernel hands out
#: zeroed pages as the socket fills them), in huge pages where the system allows
_MAPPED_MIN = 2**20
#: private, not ``mmap``'s default shared mapping: anonymous shared memory is shmem, which
#: gets no transparent huge pages, so 100 MB would cost 24,000 page faults instead of 50
_PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _allocate(length: int) -> Any:
    try:
        if length < _MAPPED_MIN:
            return bytearray(length)
        mapped = mmap.mmap(-1, length, flags=_PRIVATE)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mapped.madvise(mmap.MADV_HUGEPAGE)
        return memoryview(mapped)
    except (MemoryError, OverflowError, OSError) as exc:
        raise ProtocolError(f"cannot allocate a buffer of {length} bytes: {exc}") from None
