"""A long-lived, batched, two-way message stream with request/reply on top.

Client-scheduler and worker-scheduler links each use one ``Stream``: plain messages are
dispatched to handlers in the order they were sent, and requests ride the same connection, so
a request sent after a message sees that message's effects (read-your-writes).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from storied.comm.batched import BatchedSend, flush_pending
from storied.comm.core import Comm, CommClosedError, FrameTooLarge
from storied.exceptions import BaseExceptionCarrier
from storied.protocol.serialize import pickle_dumps, pickle_loads

logger = logging.getLogger("storied.comm")


#: errors of a request's handler that go back to the asker; ``SystemExit`` and
#: ``KeyboardInterrupt`` too: raised by user code (``client.run``), they must not stop our loop
_REPLIED_ERRORS = (Exception, SystemExit, KeyboardInterrupt)


class RemoteError(Exception):
    """A request failed on the other side and the original exception could not be rebuilt."""


class Stream:
    """Dispatches incoming messages to ``handlers`` and sends replies to ``request``s."""

    def __init__(self, comm: Comm, handlers: dict[str, Callable[..., Any]], name: str) -> None:
        self.comm = comm
        self.handlers = handlers
        self.name = name
        self.batched = BatchedSend(comm)
        self.batched.on_oversized = self._oversized
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: when the last message arrived (time.monotonic): a silent peer may be cut off
        self.last_heard = time.monotonic()

    @property
    def closed(self) -> bool:
        return self.comm.closed

    def send(self, msg: dict[str, Any]) -> None:
        self.batched.send(msg)

    def extend(self, msgs: list[dict[str, Any]]) -> None:
        self.batched.extend(msgs)

    async def request(self, method: str, **kwargs: Any) -> Any:
        """Ask the other side to run handler ``method``; returns its result or raises its error."""
        if self.comm.closed:
            raise CommClosedError(f"{self.name}: {self.comm.closed_reason}")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.send({"op": "request", "id": request_id, "method": method, "kwargs": kwargs})
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _oversized(self, msg: Any, exc: FrameTooLarge) -> None:
        """A message too large to send: its requester gets the error, else it is logged."""
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "request":
            future = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_exception(exc)
                return
        elif op == "reply" and msg.get("status") != "error":
            self.send(_error_reply(msg.get("id"), exc))
            return
        logger.error("Could not send %r on %s: %s", op, self.name, exc)

    async def run(self) -> None:
        """Read and dispatch until the connection closes; unknown or malformed input closes it."""
        try:
            while True:
                batch = await self.comm.read()
                self.last_heard = time.monotonic()
                if not isinstance(batch, list):
                    batch = [batch]
                for msg in batch:
                    self._dispatch(msg)
                flush_pending()
        except CommClosedError:
            pass
        except _BadMessage as exc:
            logger.warning("Closing %s from %s: %s", self.name, self.comm.peer_address, exc)
            self.comm.abort(f"bad message: {exc}")
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        CommClosedError(f"{self.name} closed: {self.comm.closed_reason}")
                    )
            for task in list(self._tasks):
                task.cancel()

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise _BadMessage(f"expected a message dict with an 'op', got {type(msg).__name__}")
        op = msg.pop("op")
        if op == "reply":
            self._resolve(msg)
            return
        if op == "request":
            self._serve(msg)
            return
        handler = self.handlers.get(op)
        if handler is None:
            raise _BadMessage(f"unknown operation {op!r}")
        try:
            handler(**msg)
        except TypeError as exc:
            raise _BadMessage(f"malformed {op!r} message: {exc}") from exc
        except Exception:
            logger.exception("Error handling %r from %s", op, self.comm.peer_address)

    def _resolve(self, msg: dict[str, Any]) -> None:
        future = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return
        if msg.get("status") == "error":
            future.set_exception(BaseExceptionCarrier.wrap(_rebuild_error(msg)))
        else:
            future.set_result(msg.get("result"))

    def _serve(self, msg: dict[str, Any]) -> None:
        request_id = msg.get("id")
        method = msg.get("method")
        kwargs = msg.get("kwargs") or {}
        handler = self.handlers.get(method) if isinstance(method, str) else None
        if handler is None or not isinstance(kwargs, dict):
            raise _BadMessage(f"unknown request {method!r}")
        try:
            result = handler(**kwargs)
        except _REPLIED_ERRORS as exc:
            self.send(_error_reply(request_id, exc))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._reply_later(request_id, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.send({"op": "reply", "id": request_id, "result": result})

    async def _reply_later(self, request_id: Any, awaitable: Any) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except _REPLIED_ERRORS as exc:
            self.send(_error_reply(request_id, exc))
        else:
            self.send({"op": "reply", "id": request_id, "result": result})

    def abort_if_silent(self, timeout: float) -> bool:
        """Cut the connection if nothing arrived for ``timeout`` seconds.

        A network failure that drops packets silently leaves a TCP connection open for many
        minutes; the peers send heartbeats, so silence this long means the link is gone.
        """
        silent = time.monotonic() - self.last_heard
        if silent <= timeout or self.comm.closed:
            return False
        logger.warning(
            "Nothing from %s for %.1fs: closing %s", self.comm.peer_address, silent, self.name
        )
        self.comm.abort(f"peer silent for {silent:.1f}s")
        return True

    async def close(self) -> None:
        self.batched.flush()
        await self.comm.close()


class _BadMessage(Exception):
    pass


def _error_reply(request_id: Any, exc: BaseException) -> dict[str, Any]:
    try:
        payload: bytes | None = pickle_dumps(exc)
    except TypeError:
        payload = None
    return {
        "op": "reply",
        "id": request_id,
        "status": "error",
        "exception": payload,
        "text": f"{type(exc).__name__}: {exc}",
    }


def _rebuild_error(msg: dict[str, Any]) -> BaseException:
    payload = msg.get("exception")
    if isinstance(payload, bytes):
        try:
            exc = pickle_loads(payload)
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    return RemoteError(msg.get("text", "remote error"))
