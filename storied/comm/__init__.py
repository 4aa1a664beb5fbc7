"""The network layer: asyncio connections speaking the ``storied.protocol`` wire format."""

from storied.comm.batched import BatchedSend
from storied.comm.core import (
    Comm,
    CommClosedError,
    ConnectionPool,
    FrameTooLarge,
    Listener,
    connect,
    format_address,
    parse_address,
)
from storied.comm.security import Security

__all__ = [
    "BatchedSend",
    "Comm",
    "CommClosedError",
    "ConnectionPool",
    "FrameTooLarge",
    "Listener",
    "Security",
    "connect",
    "format_address",
    "parse_address",
]
