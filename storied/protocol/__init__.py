"""The wire protocol: framing, serialization and the authentication handshake.

Everything here is pure (bytes in, objects out); the asyncio layer lives in ``storied.comm``.
"""

from storied.protocol.frames import FrameDecoder, ProtocolError, encode_frame
from storied.protocol.serialize import dumps, loads

__all__ = ["FrameDecoder", "ProtocolError", "dumps", "encode_frame", "loads"]
