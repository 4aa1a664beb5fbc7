"""Coalesce the messages a burst of work produces into one frame per connection."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from storied.comm.core import Comm, CommClosedError, FrameTooLarge

logger = logging.getLogger("storied.comm")

#: per event loop, the BatchedSends holding messages not yet written
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[BatchedSend]] = (
    weakref.WeakKeyDictionary()
)


def flush_pending() -> None:
    """Write every buffered batch of the running loop now.

    Whoever handles a batch of incoming messages (a stream's read, finished tasks from
    executor threads) calls this when done: the replies leave in the same loop iteration, one
    frame per connection, instead of one iteration later.
    """
    pending = _pending.get(asyncio.get_running_loop())
    while pending:
        pending.pop()._flush()


class BatchedSend:
    """Buffers messages and writes them as one list: at the end of the batch of work that
    produced them (``flush_pending``), or at the latest on the next loop iteration."""

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self._buffer: list[Any] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self._loop_pending = _pending.setdefault(self._loop, [])
        self.sent_messages = 0
        #: called as each batch is written, for messages to put first in it (records kept
        #: meanwhile: they are read before any reply in the same batch)
        self.on_flush: Callable[[], list[Any]] | None = None
        #: told of a message too large to send on its own (else it is logged)
        self.on_oversized: Callable[[Any, FrameTooLarge], None] | None = None
        #: rewrites each batch before it is written (fewer, larger messages; same meaning)
        self.coalesce: Callable[[list[Any]], list[Any]] | None = None

    def send(self, msg: Any) -> None:
        self._buffer.append(msg)
        if not self._scheduled:
            self._schedule()

    def extend(self, msgs: list[Any]) -> None:
        if msgs:
            self._buffer.extend(msgs)
            if not self._scheduled:
                self._schedule()

    def flush_soon(self) -> None:
        """Write a batch at the end of this burst of work even if nothing is buffered yet, for
        ``on_flush`` to fill."""
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        self._loop_pending.append(self)
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self.on_flush is not None:
            self._buffer[:0] = self.on_flush()
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        if self.comm.closed:
            return
        if self.coalesce is not None:
            batch = self.coalesce(batch)
        self._write(batch)

    def _write(self, batch: list[Any]) -> None:
        """Write ``batch``; one over the frame size limit goes as smaller batches instead."""
        try:
            self.comm.write(batch)
        except CommClosedError:
            return
        except FrameTooLarge as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                self._write(batch[:half])
                self._write(batch[half:])
            elif self.on_oversized is not None:
                self.on_oversized(batch[0], exc)
            else:
                logger.error("Could not send a message to %s: %s", self.comm.peer_address, exc)
            return
        self.sent_messages += len(batch)

    def flush(self) -> None:
        """Write whatever is buffered now (before closing)."""
        self._flush()
