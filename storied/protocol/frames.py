"""Length-prefixed frames, decoded without any I/O so the decoder can be fuzzed directly."""

from __future__ import annotations

import struct

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size
DEFAULT_MAX_FRAME_SIZE = 256 * 2**20


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the protocol; the connection must be closed."""


def encode_frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Turns a byte stream into whole frames; refuses frames above ``max_frame_size``."""

    __slots__ = ("_buffer", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._buffer = bytearray()
        self.max_frame_size = max_frame_size

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes and return every frame they complete."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER_SIZE:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if size > self.max_frame_size:
                raise ProtocolError(
                    f"frame of {size} bytes exceeds the maximum of {self.max_frame_size} bytes"
                )
            if end - offset - HEADER_SIZE < size:
                break
            start = offset + HEADER_SIZE
            frames.append(bytes(buffer[start : start + size]))
            offset = start + size
        if offset:
            del buffer[:offset]
        return frames
