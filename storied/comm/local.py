"""In-process connections: peers on one event loop talk through memory, not loopback TCP.

A LocalCluster's client, scheduler and in-process workers share a loop; skipping the socket
saves two system calls and a trip through the event loop's selector per message. Messages
still go through msgpack, so each end sees exactly what it would have seen over the wire:
the buffers of data in a message are copied too, so sender and receiver never share memory.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from storied.comm.core import Comm, CommClosedError, check_frame_size
from storied.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from storied.protocol.serialize import dumps_with_buffers, loads


class LocalComm(Comm):
    """One end of an in-memory connection; ``pair`` makes both ends."""

    def __init__(self, local_address: str, peer_address: str) -> None:
        self.local_address = local_address
        #: the largest message this end sends (``comm.max-frame-size``, as over TCP)
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.peer_address = peer_address
        self.name = ""
        self.peer: LocalComm | None = None
        self._messages: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed_reason: str | None = None

    @classmethod
    def pair(cls, client_address: str, server_address: str) -> tuple[LocalComm, LocalComm]:
        """``(client end, server end)``."""
        client, server = cls(client_address, server_address), cls(server_address, client_address)
        client.peer, server.peer = server, client
        return client, server

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    async def read(self, timeout: float | None = None) -> Any:
        """The next message; what was sent before the peer closed is still delivered."""
        while not self._messages:
            if self._closed_reason is not None:
                raise CommClosedError(self._closed_reason)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"no message from {self.peer_address} within {timeout}s"
                ) from None
            finally:
                self._waiter = None
        return self._messages.popleft()

    def write(self, msg: Any) -> None:
        if self._closed_reason is not None or self.peer is None:
            raise CommClosedError(self._closed_reason or "closed")
        header, buffers = dumps_with_buffers(msg)
        check_frame_size(len(header), self.max_frame_size)
        if buffers:
            self.peer._receive(loads(header, [bytearray(buffer) for buffer in buffers]))
        else:
            self.peer._receive(loads(header))

    async def send(self, msg: Any) -> None:
        self.write(msg)

    def abort(self, reason: str = "closed locally") -> None:
        self._shut(reason)
        if self.peer is not None:
            self.peer._shut("closed by peer")

    async def close(self) -> None:
        self.abort()

    def _receive(self, msg: Any) -> None:
        self._messages.append(msg)
        self._wake()

    def _shut(self, reason: str) -> None:
        if self._closed_reason is None:
            self._closed_reason = reason
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
