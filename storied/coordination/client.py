"""Which client a coordination object talks through, and who is asking.

Outside tasks that is the default client (the last one made); inside a task it is the client
of the worker running the task, so a Lock or Variable passed into a task works there too.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from storied.client.current import global_client

if TYPE_CHECKING:
    from storied.client.client import Client


def _running_worker() -> Any:
    from storied.worker.server import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def current_client(client: Client | None = None) -> Client:
    """``client`` if given; else the worker's client inside a task, else the default client."""
    if client is not None:
        return client
    worker = _running_worker()
    if worker is not None:
        return worker.coordination.client()
    default = global_client()
    if default is None:
        raise ValueError(
            "no storied Client to coordinate through: create a Client first (or pass client=)"
        )
    return default


def who() -> dict[str, str | None]:
    """The worker and task asking, when the caller is a task (the record says who did what)."""
    worker = _running_worker()
    if worker is None:
        return {"worker": None, "task": None}
    return {"worker": worker.address, "task": worker.get_current_task()}


class Coordinated:
    """A named object whose state lives on the scheduler; pickles as its name alone, so in a
    task it talks through that task's worker's client."""

    prefix = "coordinated"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.name = name or f"{self.prefix}-{uuid.uuid4().hex}"
        self._client = client

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = current_client()
        return self._client

    def _call(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``method(*args, caller)`` on the client's loop: blocking, or an awaitable when
        the client is asynchronous. ``caller`` is taken here, in the calling thread."""
        return self.client._sync(method, *args, who())

    async def _ask(self, op: str, caller: dict[str, Any], **kwargs: Any) -> Any:
        return await self.client._request(op, name=self.name, who=caller, **kwargs)

    def __reduce__(self) -> Any:
        return (type(self), (self.name,))

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.name}>"


class HeldInWith:
    """``with x:`` and ``async with x:`` acquire on entry and release on exit (Lock,
    Semaphore, MultiLock); ``acquire``/``release`` are awaitables with an asynchronous client."""

    def acquire(self) -> Any:
        raise NotImplementedError

    def release(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()
