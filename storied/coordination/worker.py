"""A worker's part in coordination: the actors it keeps, and the client its tasks use.

The worker server makes one ``WorkerCoordination`` and calls it in a few places: actor
requests from peers (``ACTOR_OPS``), keys it forgets (an actor goes with its key), and close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from storied.protocol.serialize import pickle_dumps, pickle_loads

if TYPE_CHECKING:
    from storied.client.client import Client
    from storied.worker.server import Worker

logger = logging.getLogger("storied.worker.coordination")

#: requests a worker's peer listener hands to ``WorkerCoordination.handle``
ACTOR_OPS = frozenset({"actor-execute", "actor-attribute"})

#: in a worker's actor thread, ``coordination`` is that worker's ``WorkerCoordination``
_actor_thread_state = threading.local()


def local_actor(address: str, key: str) -> Any | None:
    """The actor itself when called from an actor method on the worker keeping it, else None.

    A call through the network from there would wait for the actor thread its caller holds.
    """
    coordination = getattr(_actor_thread_state, "coordination", None)
    if coordination is None or coordination.worker.address != address:
        return None
    return coordination.actors.get(key)


class WorkerCoordination:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.actors: dict[str, Any] = {}
        self._client: Client | None = None
        self._client_lock = threading.Lock()
        self._actor_thread: concurrent.futures.ThreadPoolExecutor | None = None

    def client(self) -> Client:
        """The client tasks on this worker coordinate through; made on first use, from a
        task's thread (never the worker's event loop: it blocks until connected)."""
        with self._client_lock:
            if self._client is None:
                from storied.client.client import Client

                self._client = Client(
                    self.worker.scheduler_address,
                    security=self.worker.security,
                    name=f"worker-client-{self.worker.address}",
                    set_as_default=False,
                )
                logger.info("Worker %s made client %s", self.worker.address, self._client.id)
            return self._client

    # ------------------------------------------------------------------ actors

    def add_actor(self, key: str, instance: Any) -> None:
        self.actors[key] = instance
        self.worker.log_event(
            "actor",
            {
                "action": "create",
                "key": key,
                "class": type(instance).__qualname__,
                "actor_worker": self.worker.address,
            },
        )

    def forget(self, keys: list[str]) -> None:
        """The worker dropped these keys: an actor among them is gone for good."""
        for key in keys:
            if self.actors.pop(key, None) is not None:
                self.worker.log_event(
                    "actor", {"action": "release", "key": key, "actor_worker": self.worker.address}
                )

    async def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Run an actor method (``actor-execute``) or read an attribute (``actor-attribute``);
        the reply carries the pickled result or the error."""
        from storied.worker.server import _error_payload

        key, op = msg.get("key"), msg.get("op")
        caller = msg.get("who") if isinstance(msg.get("who"), dict) else {}
        start = time.time()
        what = msg.get("method") if op == "actor-execute" else msg.get("attribute")
        try:
            actor = self.actors.get(key)  # type: ignore[arg-type]
            if actor is None:
                raise ValueError(
                    f"no actor {key!r} on worker {self.worker.address}: it was released, "
                    "or its worker restarted"
                )
            if not isinstance(what, str) or what.startswith("_"):
                raise AttributeError(f"actors do not expose {what!r}")
            if op == "actor-attribute":
                result = getattr(actor, what)
            else:
                result = await self._run(getattr(actor, what), msg.get("args"))
            reply = {"status": "OK", "result": pickle_dumps(result)}
        except Exception as exc:
            reply = {"status": "error", **_error_payload(exc)}
        self.record_use(key, op == "actor-execute", what, caller, start, reply.get("text"))
        return reply

    def record_use(
        self,
        key: Any,
        called: bool,
        what: Any,
        caller: dict[str, Any],
        start: float,
        error: str | None,
    ) -> None:
        """One method call (or attribute read) of an actor, on the record."""
        self.worker.log_event(
            "actor",
            {
                "action": "call" if called else "attribute",
                "key": key,
                "method" if called else "attribute": what,
                "actor_worker": self.worker.address,
                "client": caller.get("client"),
                "worker": caller.get("worker"),
                "task": caller.get("task"),
                "duration": time.time() - start,
                "status": "OK" if error is None else "error",
                **({"exception": error} if error is not None else {}),
            },
        )

    async def _run(self, method: Any, payload: Any) -> Any:
        """One method call: coroutines on the worker's loop, the rest one at a time in the
        actor thread (as Dask does), where ``get_worker()`` works."""
        if not isinstance(payload, bytes):
            raise TypeError("an actor call carries its arguments pickled")
        args, kwargs = pickle_loads(payload)
        if inspect.iscoroutinefunction(method):
            return await method(*args, **kwargs)
        if self._actor_thread is None:
            self._actor_thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="storied-actor", initializer=self._bind_thread
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._actor_thread, functools.partial(method, *args, **kwargs)
        )

    def _bind_thread(self) -> None:
        from storied.worker.server import _thread_state

        _thread_state.worker = self.worker
        _actor_thread_state.coordination = self

    async def close(self) -> None:
        if self._actor_thread is not None:
            self._actor_thread.shutdown(wait=False, cancel_futures=True)
        self.actors.clear()
        client, self._client = self._client, None
        if client is not None:
            # in a thread: the client's loop may be this very loop (an in-process worker)
            await asyncio.to_thread(client.close)
