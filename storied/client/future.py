"""Futures: handles on remote results, reference counted so the cluster forgets unused ones."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tblib

from storied.compat import missing
from storied.exceptions import CancelledError, FutureLostError
from storied.protocol.serialize import pickle_loads

logger = logging.getLogger("storied.client")

if TYPE_CHECKING:
    from storied.client.client import Client

#: numbers the client's FutureStates and cancels in the order they were made: a cancel's
#: answer concerns only the states made before the cancel was sent
births = itertools.count()


class FutureState:
    """What the client knows of one key; shared by every Future of that key."""

    __slots__ = (
        "_callbacks", "_event", "blame", "born", "data", "exception", "status", "type",
        "workers",
    )  # fmt: skip

    def __init__(self) -> None:
        self.status = "pending"
        self.born = next(births)
        self.type: str | None = None
        self.workers: list[str] = []
        self.exception: BaseException | None = None
        #: the key of the task whose failure made this one fail (itself if it failed on its own)
        self.blame: str | None = None
        #: a small result's pickled bytes, sent along by the scheduler: no fetch needed
        self.data: bytes | None = None
        self._event: asyncio.Event | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def done(self) -> bool:
        return self.status != "pending"

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def finish(self, type_name: str | None, workers: list[str], data: bytes | None) -> None:
        self.status, self.type, self.workers, self.data = "finished", type_name, workers, data
        self._wake()

    def fail(self, error: dict[str, Any]) -> None:
        self.status, self.exception = "error", _rebuild_exception(error)
        self.blame = error.get("blame")
        self._wake()

    def cancel(self, reason: str | None = None) -> None:
        """``reason`` (Dask's words, e.g. ``scheduler-connection-lost``) goes into the error."""
        self.status = "cancelled"
        self.exception = (
            CancelledError(f"the future was cancelled for reason: {reason}") if reason else None
        )
        self._wake()

    def lose(self) -> None:
        self.status = "lost"
        self._wake()

    def reset(self) -> None:
        """The data was lost and is being recomputed."""
        self.status, self.workers, self.data = "pending", [], None
        if self._event is not None:
            self._event.clear()

    async def wait(self) -> None:
        """Wait on the client's loop until done."""
        while not self.done:
            if self._event is None:
                self._event = asyncio.Event()
            await self._event.wait()
            if not self.done:
                self._event.clear()

    def on_done(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the client's loop) once done; at once if already done."""
        if self.done:
            callback()
        else:
            self._callbacks.append(callback)

    def exception_object(self) -> BaseException:
        if self.status == "cancelled":
            return self.exception or CancelledError("the future was cancelled")
        if self.status == "lost":
            return FutureLostError("the data was lost and cannot be recomputed")
        assert self.exception is not None
        return self.exception

    def traceback_object(self) -> Any:
        return self.exception.__traceback__ if self.exception is not None else None


async def wait_states(
    states: list[FutureState], timeout: float | None = None, at_least: int | None = None
) -> None:
    """Wait until ``at_least`` (default: all) states are done; one loop future for the lot."""
    pending = [state for state in states if not state.done]
    needed = len(pending) if at_least is None else at_least - (len(states) - len(pending))
    if needed <= 0:
        return
    all_done = asyncio.get_running_loop().create_future()
    remaining = needed

    def one_done() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not all_done.done():
            all_done.set_result(None)

    for state in pending:
        state.on_done(one_done)
    try:
        await asyncio.wait_for(all_done, timeout)
    except TimeoutError:
        raise TimeoutError(f"{remaining} futures not done within {timeout}s") from None


def _rebuild_exception(error: dict[str, Any]) -> BaseException:
    """The task's exception with its remote traceback, built once, when the error arrives.

    tblib links the rebuilt traceback to the frames that build it; built here, at the bottom
    of the event loop's stack, no frame in that chain holds a Future, so none is kept alive.
    """
    try:
        exc = pickle_loads(error["exception"])
    except Exception:
        exc = RuntimeError(error.get("text", "the task failed"))
    tb_dict = error.get("traceback")
    if tb_dict:
        try:
            exc = exc.with_traceback(tblib.Traceback.from_dict(tb_dict).as_traceback())
        except Exception:
            logger.debug("Could not rebuild the remote traceback", exc_info=True)
    return exc


class Future:
    """A remote result. ``result()`` waits for it; dropping the last Future releases it.

    A Future pickled inside a function or a structure (not as a task argument, which travels as
    a reference) is rebuilt unbound on the other side and binds, on first use, to the client
    there: ``get_client()`` in a task, else the current or default client.
    """

    __slots__ = ("__weakref__", "_client", "_holds", "_state", "key")
    #: dask treats objects with this flag as futures in graphs and ``dask.delayed``
    __dask_future__ = True

    def __init__(
        self, key: str, client: Client | None = None, state: FutureState | None = None
    ) -> None:
        """``state``: already acquired for this Future (``Client._acquire``), else acquired here.

        Without ``client``, it binds to the client in charge where it is first used.
        """
        self.key = key
        #: whether this Future holds a reference to its key in its client (bound, not released)
        self._holds = client is not None
        if client is not None:
            self._client = client
            self._state = state if state is not None else client._acquire([key])[0]

    def __getattr__(self, name: str) -> Any:
        """Reached for ``_client`` and ``_state`` of a Future not bound yet (bind it), and for
        names it lacks (dask.distributed names storied does not support say so)."""
        if name not in ("_client", "_state"):
            raise missing("Future", name)
        from storied.client.worker_client import get_client

        try:
            client = get_client()
        except ValueError as exc:
            raise ValueError(
                f"the Future {self.key!r} came here pickled and no client is in charge here to "
                "bind it to: create a Client, or use one with `client.as_current()`"
            ) from exc
        self._client = client
        self._state = client._adopt(self.key)
        self._holds = True
        return getattr(self, name)

    @property
    def client(self) -> Client:
        return self._client

    @property
    def status(self) -> str:
        return self._state.status

    @property
    def type(self) -> type | str | None:
        """The result's type once known, as Dask's; its ``module.qualname`` when that module
        is not imported here (Dask likewise falls back to a name it cannot unpickle)."""
        return _resolve_type(self._state.type)

    def done(self) -> bool:
        return self._state.done

    def result(self, timeout: float | None = None) -> Any:
        """The value, raising the task's exception (with its remote traceback) if it failed."""
        return self._client._sync_waiting(self, self._result, timeout)

    async def _result(self, timeout: float | None = None) -> Any:
        results = await self._client._gather_async([self], errors="raise", timeout=timeout)
        return results[0]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._client._sync_waiting(self, self._exception, timeout)

    async def _exception(self, timeout: float | None = None) -> BaseException | None:
        await asyncio.wait_for(self._state.wait(), timeout)
        if self._state.status == "error":
            return self._state.exception_object()
        return None

    def traceback(self, timeout: float | None = None) -> Any:
        return self._client._sync_waiting(self, self._traceback, timeout)

    async def _traceback(self, timeout: float | None = None) -> Any:
        await asyncio.wait_for(self._state.wait(), timeout)
        return self._state.traceback_object()

    def cancel(self, force: bool = False, **kwargs: Any) -> Any:
        """Stop computing this future and its dependents (an awaitable with an asynchronous
        client); ``force`` cancels them for every client that wants them, as in Dask."""
        return self._client.cancel([self], force=force, **kwargs)

    def cancelled(self) -> bool:
        return self._state.status == "cancelled"

    def retry(self) -> Any:
        """Run this failed future (and the failed tasks it depends on) again."""
        return self._client.retry([self])

    def release(self) -> None:
        """Drop this Future's hold on its key now rather than when it is garbage collected;
        the cluster forgets the result once no Future holds it. Calling it again does nothing."""
        if self._holds:
            self._holds = False
            self._client._dec_ref(self.key)

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` in a separate thread once this future is done, however it ends."""
        client = self._client

        def schedule() -> None:
            client._callback_executor.submit(client._run_callback, fn, self)

        client._loop.call_soon_threadsafe(self._state.on_done, schedule)

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._result().__await__()

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("storied.Future", self.key)

    def __repr__(self) -> str:
        try:
            state = object.__getattribute__(self, "_state")
        except AttributeError:
            return f"<Future: unbound, key: {self.key}>"
        if state.status == "finished" and state.type:
            return f"<Future: finished, type: {state.type}, key: {self.key}>"
        return f"<Future: {state.status}, key: {self.key}>"

    def __del__(self) -> None:
        try:  # no suppress() and no call of release(): this runs once per future, a hot path
            if self._holds:
                self._holds = False
                self._client._dec_ref(self.key)
        except Exception:  # the client may be half torn down at interpreter exit
            pass

    def __reduce__(self) -> Any:
        """Pickled in a closure or a structure: rebuilt unbound, by key (see the class doc)."""
        return (Future, (self.key,))


def await_state_on(loop: asyncio.AbstractEventLoop, state: FutureState) -> threading.Event:
    """A threading.Event set when ``state`` is done (for ``wait``/``as_completed`` in threads)."""
    event = threading.Event()
    loop.call_soon_threadsafe(state.on_done, event.set)
    return event


def _resolve_type(name: str | None) -> type | str | None:
    """The class a worker named ``module.qualname``, looked up in modules already imported
    (never importing one just to answer); the name itself if it is not found."""
    if not name:
        return None
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):  # the longest module name first
        found: Any = sys.modules.get(".".join(parts[:split]))
        for attribute in parts[split:] if found is not None else ():
            found = getattr(found, attribute, None)
        if isinstance(found, type):
            return found
    return name
