"""``as_completed``: futures in the order they finish, one by one or in batches, as in Dask."""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from storied import config
from storied.client.future import Future
from storied.worker.secede import slot_given_up_while_waiting


class as_completed:
    """Iterate over futures in the order they finish; ``add``/``update`` more meanwhile.

    ``with_results=True`` yields ``(future, result)`` pairs; a failed future raises its
    exception when its turn comes, or with ``raise_errors=False`` comes as
    ``(future, (type, exception, traceback))``. ``timeout`` (seconds from now) bounds the wait:
    past it, ``next`` raises ``TimeoutError``.
    """

    def __init__(
        self,
        futures: Iterable[Future] | None = None,
        with_results: bool = False,
        raise_errors: bool = True,
        *,
        timeout: float | str | None = None,
    ) -> None:
        self.with_results = with_results
        self.raise_errors = raise_errors
        seconds = config.parse_timedelta(timeout)
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._queue: collections.deque[Future] = collections.deque()
        self._pending = 0
        #: bumped by ``clear()``: futures added before it no longer count when they finish
        self._generation = 0
        self._condition = threading.Condition()
        self._async_event: asyncio.Event | None = None
        if futures is not None:
            self.update(futures)

    def update(self, futures: Iterable[Future]) -> None:
        """Add futures; each comes out of the iterator once it finishes."""
        futures = list(futures)
        for future in futures:
            if not isinstance(future, Future):
                raise TypeError(f"as_completed() takes futures, not {type(future).__name__}")
        with self._condition:
            self._pending += len(futures)
            generation = self._generation
        for future in futures:
            future.client._loop.call_soon_threadsafe(
                future._state.on_done, functools.partial(self._finished, generation, future)
            )

    def add(self, future: Future) -> None:
        """Add one future; it comes out of the iterator once it finishes."""
        self.update([future])

    def _finished(self, generation: int, future: Future) -> None:
        with self._condition:
            if generation != self._generation:
                return
            self._pending -= 1
            self._queue.append(future)
            self._condition.notify_all()
        if self._async_event is not None:
            self._async_event.set()

    def count(self) -> int:
        """Futures not yet yielded: still running, or finished and waiting in the queue."""
        with self._condition:
            return self._pending + len(self._queue)

    def is_empty(self) -> bool:
        return self.count() == 0

    def has_ready(self) -> bool:
        """Whether a finished future waits to be yielded."""
        with self._condition:
            return bool(self._queue)

    def clear(self) -> None:
        """Forget every future added so far, finished or not."""
        with self._condition:
            self._generation += 1
            self._pending = 0
            self._queue.clear()

    def __repr__(self) -> str:
        with self._condition:
            return f"<as_completed: waiting={self._pending} done={len(self._queue)}>"

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("as_completed() timed out")
        return remaining

    def _take(self, block: bool, most: int | None = None) -> list[Future]:
        """Up to ``most`` (default: all) finished futures waiting, at least one if ``block``;
        StopIteration when none are left at all.

        A task that must wait here gives up its thread slot meanwhile (as in a client call),
        and takes one back once the lock is let go: the futures it waits for need the loop.
        """
        if block and not self.has_ready():
            with slot_given_up_while_waiting():
                return self._take_locked(block, most)
        return self._take_locked(block, most)

    def _take_locked(self, block: bool, most: int | None) -> list[Future]:
        with self._condition:
            while block and not self._queue:
                if self._pending == 0:
                    raise StopIteration
                self._condition.wait(self._remaining())
            queue = self._queue
            count = len(queue) if most is None else min(most, len(queue))
            return [queue.popleft() for _ in range(count)]

    def _pair(self, future: Future) -> Any:
        """``future``, or with ``with_results`` the pair (raising its error, if told to)."""
        if not self.with_results:
            return future
        if future.status == "error":
            exc = future._state.exception_object()
            if self.raise_errors:
                raise exc
            return future, (type(exc), exc, exc.__traceback__)
        if future.status == "cancelled":
            return future, future._state.exception_object()
        return future, future.result()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        [future] = self._take(block=True, most=1)
        return self._pair(future)

    next = __next__

    def next_batch(self, block: bool = True) -> list[Any]:
        """Every finished future not yet yielded; with ``block``, wait for at least one."""
        return [self._pair(future) for future in self._take(block)]

    def batches(self) -> Iterator[list[Any]]:
        """Yield lists of the futures finished since the last list, until none are left."""
        while True:
            try:
                yield self.next_batch(block=True)
            except StopIteration:
                return

    def __aiter__(self) -> as_completed:
        return self

    async def __anext__(self) -> Any:
        if self._async_event is None:
            self._async_event = asyncio.Event()
        while True:
            with self._condition:
                if self._queue:
                    future = self._queue.popleft()
                    break
                if self._pending == 0:
                    raise StopAsyncIteration
                self._async_event.clear()
            try:
                await asyncio.wait_for(self._async_event.wait(), self._remaining())
            except TimeoutError:
                raise TimeoutError("as_completed() timed out") from None
        if not self.with_results:
            return future
        if future.status == "finished":
            return future, await future._result()
        return self._pair(future)
