"""Actors: a stateful object living on one worker, its methods called remotely, as in Dask.

``client.submit(Counter, actor=True)`` runs ``create_actor`` as a task: it builds the object
on the worker, keeps it there under the task's key (``WorkerCoordination``), and returns an
``Actor`` handle as the task's result. The handle is small and pickles to any process (the
client, or a task given the actor's future), where calling a method sends it to the worker
and returns an ``ActorFuture``; reading an attribute returns its value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from storied import config
from storied.client.future import _rebuild_exception
from storied.client.reconnect import USABLE
from storied.coordination.client import current_client, who
from storied.coordination.worker import local_actor
from storied.protocol.serialize import pickle_dumps, pickle_loads

if TYPE_CHECKING:
    from storied.client.client import Client
    from storied.client.future import Future
    from storied.client.options import TaskOptions


def submit_actor(
    client: Client,
    cls: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str | None,
    options: TaskOptions,
) -> Future:
    """``client.submit(cls, *args, actor=True, **kwargs)``: a future of an ``Actor``."""
    if not isinstance(cls, type):
        raise TypeError(f"submit(..., actor=True) needs a class, not {cls!r}")
    key = key or f"{cls.__name__}-{uuid.uuid4().hex}"
    return client._submit_many(create_actor, [((cls, *args), kwargs)], [key], False, options)[0]


def create_actor(cls: type, /, *args: Any, **kwargs: Any) -> Actor:
    """The task behind an actor future: runs on the worker that will keep the actor."""
    from storied.worker.server import get_worker

    worker = get_worker()
    key = worker.get_current_task()
    assert key is not None
    worker.coordination.add_actor(key, cls(*args, **kwargs))
    return Actor(cls, worker.address, key)


class Actor:
    """A handle on an actor: ``actor.method(...)`` -> ``ActorFuture``; ``actor.attr`` -> value.

    Methods run on the actor's worker one at a time, in its actor thread (coroutine methods
    on its event loop), as in Dask. A handle unpickled where there is a client (the result
    of the actor's future, a value in a Variable) holds a future of the actor's key, so the
    actor lives at least as long as the handle; the worker's own handle holds none.
    """

    def __init__(self, cls: type, address: str, key: str) -> None:
        self._cls = cls
        self._address = address
        self.key = key
        self._future: Future | None = None

    def _hold(self) -> None:
        """Keep the actor alive through the client here, if there is one."""
        from storied.client.future import Future

        try:
            client = current_client()
        except ValueError:
            return  # a worker process fetching the handle as a task's input
        if client.status in USABLE:
            self._future = Future(self.key, client)
            client._send({"op": "client-desires-keys", "keys": [self.key]})

    def __repr__(self) -> str:
        return f"<Actor: {self._cls.__name__}, key={self.key}>"

    def __reduce__(self) -> Any:
        return (_unpickle_actor, (self._cls, self._address, self.key))

    def __dir__(self) -> list[str]:
        names = set(dir(type(self)))
        names.update(name for name in dir(self._cls) if not name.startswith("_"))
        return sorted(names)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self._cls, name, None)
        if local_actor(self._address, self.key) is not None:
            return self._here(name, callable(attribute))
        if callable(attribute):
            return functools.partial(self._call, name)
        client = current_client()
        return client._sync(self._ask, client, "actor-attribute", {"attribute": name}, who())

    def _call(self, method: str, *args: Any, **kwargs: Any) -> ActorFuture:
        client = current_client()
        call = self._ask(
            client,
            "actor-execute",
            {"method": method, "args": pickle_dumps((args, kwargs))},
            who(),
        )
        with _order_lock:
            calls = _last_calls.setdefault(client, {})
            done = asyncio.run_coroutine_threadsafe(_after(calls.get(self.key), call), client._loop)
            calls[self.key] = done
        return ActorFuture(done)

    def _here(self, name: str, is_method: bool) -> Any:
        """From an actor method on this actor's own worker: use it directly, as Dask does."""
        from storied.worker.server import get_worker

        coordination = get_worker().coordination
        actor = local_actor(self._address, self.key)
        start = time.time()
        if not is_method:
            value = getattr(actor, name)
            coordination.record_use(self.key, False, name, who(), start, None)
            return value

        def call(*args: Any, **kwargs: Any) -> ActorFuture:
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            try:
                done.set_result(getattr(actor, name)(*args, **kwargs))
            except Exception as exc:
                done.set_exception(exc)
            error = None if done.exception() is None else repr(done.exception())
            coordination.record_use(self.key, True, name, who(), start, error)
            return ActorFuture(done)

        return call

    async def _ask(
        self, client: Client, op: str, msg: dict[str, Any], caller: dict[str, Any]
    ) -> Any:
        assert client._pool is not None
        request = {"op": op, "key": self.key, "who": {"client": client.id, **caller}, **msg}
        try:
            reply = await client._pool.request(self._address, request)
        except OSError as exc:
            raise OSError(
                f"could not reach the worker {self._address} of actor {self.key}"
            ) from exc
        if reply.get("status") != "OK":
            raise _rebuild_exception(reply)
        return pickle_loads(reply["result"])


#: each client's last call to each actor: the next call is sent once it is answered, so one
#: caller's calls run in the order made (the pool's connections could reorder them)
_last_calls: weakref.WeakKeyDictionary[Client, dict[str, concurrent.futures.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)
_order_lock = threading.Lock()


async def _after(previous: concurrent.futures.Future[Any] | None, call: Any) -> Any:
    if previous is not None:
        await asyncio.wait([asyncio.wrap_future(previous)])  # its outcome is its caller's
    return await call


def _unpickle_actor(cls: type, address: str, key: str) -> Actor:
    actor = Actor(cls, address, key)
    actor._hold()
    return actor


class ActorFuture:
    """The result of an actor method call: ``result(timeout)``, or ``await`` it."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self._future = future

    def result(self, timeout: float | str | None = None) -> Any:
        return self._future.result(config.parse_timedelta(timeout))

    def done(self) -> bool:
        return self._future.done()

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self._future).__await__()

    def __repr__(self) -> str:
        return "<ActorFuture>"
