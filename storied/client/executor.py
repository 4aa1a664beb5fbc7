"""``Client.get_executor()``: the cluster as a ``concurrent.futures.Executor``, as in Dask."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from storied.client.future import Future

if TYPE_CHECKING:
    from storied.client.client import Client

#: what ``get_executor(**kwargs)`` passes on to every submit, as Dask's ClientExecutor takes
_SUBMIT_OPTIONS = frozenset({"pure", "workers", "resources", "allow_other_workers", "retries"})


class ClientExecutor(concurrent.futures.Executor):
    """Runs calls on the cluster through ``client``; ``submit`` returns standard
    ``concurrent.futures.Future`` objects, so ``concurrent.futures.wait``, ``as_completed``
    and ``with`` blocks work as with any executor."""

    def __init__(self, client: Client, **kwargs: Any) -> None:
        unknown = set(kwargs) - _SUBMIT_OPTIONS
        if unknown:
            raise TypeError(
                f"unsupported arguments to get_executor(): {sorted(unknown)}; "
                f"it takes {sorted(_SUBMIT_OPTIONS)}"
            )
        self._client = client
        self._kwargs = kwargs
        self._futures: weakref.WeakSet[Future] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future = self._client.submit(fn, *args, **{**self._kwargs, **kwargs})
            self._futures.add(future)
        return self._wrap(future)

    def _wrap(self, future: Future) -> concurrent.futures.Future[Any]:
        """A standard future that takes ``future``'s outcome; cancelling it cancels ours."""
        wrapped: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def cancel_ours(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled() and not future.done():
                future.cancel()

        def settle(finished: Future) -> None:
            if finished.status == "cancelled":
                wrapped.cancel()
                return
            if not wrapped.set_running_or_notify_cancel():
                return
            try:
                wrapped.set_result(finished.result())
            except BaseException as exc:  # the task's own error, whatever its kind
                wrapped.set_exception(exc)

        wrapped.add_done_callback(cancel_ours)
        future.add_done_callback(settle)
        return wrapped

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Results in order, as ``Executor.map``; all calls go to the scheduler at once."""
        del chunksize  # accepted for compatibility: every call is its own task
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            futures = self._client.map(fn, *iterables, **self._kwargs)
            self._futures.update(futures)

        def results() -> Iterator[Any]:
            pending = list(reversed(futures))
            try:
                while pending:
                    future = pending.pop()
                    if deadline is None:
                        yield future.result()
                    else:
                        yield future.result(max(deadline - time.monotonic(), 0.0))
            finally:
                if pending:
                    self._client.cancel(pending)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submits; with ``wait``, block until what was submitted is done, else (or
        with ``cancel_futures``) cancel what is still running."""
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if not wait or cancel_futures:
            self._client.cancel([f for f in futures if not f.done()])
        elif futures:
            self._client.gather(futures, errors="skip")
