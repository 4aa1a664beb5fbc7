"""Coalesce messages written in one event-loop iteration into one frame."""

from __future__ import annotations

import asyncio
from typing import Any

from storied.comm.core import Comm, CommClosedError


class BatchedSend:
    """Buffers messages and writes them as one list at the end of the current loop iteration.

    This adds no latency when idle (the flush is scheduled with ``call_soon``) and turns a
    burst of messages into a single frame under load.
    """

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self._buffer: list[Any] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self.sent_messages = 0

    def send(self, msg: Any) -> None:
        self._buffer.append(msg)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def extend(self, msgs: list[Any]) -> None:
        if msgs:
            self._buffer.extend(msgs)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        if self.comm.closed:
            return
        try:
            self.comm.write(batch)
        except CommClosedError:
            return
        self.sent_messages += len(batch)

    def flush(self) -> None:
        """Write whatever is buffered now (before closing)."""
        self._flush()
