"""One background event-loop thread per process, shared by sync clients and clusters.

Reference counted: the thread stops when the last user releases it, so ``close()`` leaves no
thread behind.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from storied.comm.batched import flush_pending
from storied.exceptions import BaseExceptionCarrier

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (faster), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


#: how often a caller waiting on ``call_on_loop`` checks that the loop still runs
_STOPPED_LOOP_CHECK = 0.1


def call_on_loop(
    loop: asyncio.AbstractEventLoop | None, func: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run ``func`` on ``loop``'s thread and return its result: for state owned by that thread.

    Runs it right here when already on that loop, or when the loop is not running, including
    when it stops before getting to ``func`` (a query racing a shutdown must not hang).
    """
    if loop is None or _running_loop() is loop or not loop.is_running():
        return func(*args, **kwargs)
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return  # the caller found the loop stopped and ran it itself
        try:
            future.set_result(func(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:  # closed since the check above
        return func(*args, **kwargs)
    while True:
        try:
            return future.result(timeout=_STOPPED_LOOP_CHECK)
        except TimeoutError:
            if future.done():
                raise  # func's own TimeoutError
            if not loop.is_running() and future.cancel():
                return func(*args, **kwargs)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class LoopThread:
    _lock = threading.Lock()
    _shared: LoopThread | None = None

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._users = 0
        self._thread = threading.Thread(target=self._run, name="storied-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @classmethod
    def acquire(cls) -> LoopThread:
        with cls._lock:
            if cls._shared is None:
                cls._shared = LoopThread()
            cls._shared._users += 1
            return cls._shared

    def release(self) -> None:
        with LoopThread._lock:
            self._users -= 1
            if self._users > 0:
                return
            if LoopThread._shared is self:
                LoopThread._shared = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop thread and wait for its result from this thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking storied call was made from inside the event loop thread "
                "(e.g. in an event handler); use an asynchronous client there"
            )
        future = asyncio.run_coroutine_threadsafe(_carrying_base_exceptions(coro), self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise
        except BaseExceptionCarrier as carrier:
            raise carrier.exception from None


async def _carrying_base_exceptions(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        raise BaseExceptionCarrier(exc) from None


class Outbox:
    """Items put from any thread, handed to ``on_ready`` on the loop: one wake-up per burst.

    Waking an event loop from another thread costs a system call; under load, thousands of
    items (submits, events, finished tasks) then share one wake-up instead of one each.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[list[Any]], None]
    ) -> None:
        self._loop = loop
        self._on_ready = on_ready
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False

    def put(self, item: Any) -> None:
        self._items.append(item)
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._loop.call_soon(self.flush)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Hand over everything put so far (runs on the loop)."""
        with self._lock:
            self._wake_pending = False
        items = self._items
        batch = []
        while items:
            batch.append(items.popleft())
        if batch:
            self._on_ready(batch)
            flush_pending()
