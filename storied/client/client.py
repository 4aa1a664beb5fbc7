"""The user's handle on a cluster: submit work, gather results, read the record."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import datetime
import functools
import inspect
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from storied import config
from storied.client import replicas, run_errors, scatter_shape, versions
from storied.client.as_completed import as_completed as as_completed
from storied.client.cancel_fence import CancelFence
from storied.client.current import (
    current_client,
    global_client,
    push_default,
    remove_default,
    reset_current,
    set_current,
)
from storied.client.events import check_window, read_events
from storied.client.executor import ClientExecutor
from storied.client.future import Future, FutureState, births, wait_states
from storied.client.futures_of import futures_of
from storied.client.manage import ClusterManagement
from storied.client.options import TaskOptions, task_options, worker_restrictions
from storied.client.reconnect import USABLE, reconnect
from storied.client.recreate import recreate_error_locally
from storied.client.story import StoryEntry
from storied.comm import ConnectionPool, Security, connect
from storied.comm.stream import Stream
from storied.compat import missing
from storied.coordination import datasets
from storied.coordination.actor import submit_actor
from storied.exceptions import CancelledError
from storied.graph import defaults as graph_defaults
from storied.graph.keys import stringify
from storied.loop import LoopThread, Outbox
from storied.plugin import SchedulerPlugin, WorkerPlugin, plugin_name
from storied.protocol.serialize import (
    Pickled,
    dumps_data,
    dumps_with_refs,
    pickle_dumps,
    pickle_loads,
    token,
    typename,
)
from storied.record import LogRecordEntry, pack_event
from storied.record.trace import chrome_trace
from storied.scheduler.state import DEFAULT_FIFO_TIMEOUT
from storied.shm.results import request_data
from storied.worker.secede import slot_given_up_while_waiting
from storied.worker.server import task_holds_thread_slot

logger = logging.getLogger("storied.client")


def _task_ref(obj: Any) -> str | None:
    return obj.key if type(obj) is Future else None


def funcname(func: Callable[..., Any]) -> str:
    """The name a task key starts with: lambdas are ``lambda``, partials their function's."""
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


def _stimulus(prefix: str) -> str:
    return f"{prefix}-{time.time()}"


class Client(ClusterManagement):
    """Connect to a scheduler (or start a LocalCluster) and run Python functions on it."""

    def __init__(
        self,
        address: Any = None,
        *,
        asynchronous: bool = False,
        security: Security | None = None,
        timeout: float | str | None = None,
        name: str | None = None,
        set_as_default: bool = True,
        **cluster_kwargs: Any,
    ) -> None:
        config.configure_logging()  # as LocalCluster and the CLI: a plain Client(address) too
        self.id = f"Client-{uuid.uuid4()}"
        self.name = name
        self.asynchronous = asynchronous
        self.cluster: Any = None
        self._owns_cluster = False
        self._timeout = (
            config.parse_timedelta(
                timeout if timeout is not None else config.get("comm.connect-timeout")
            )
            or 10.0
        )
        if address is None:
            from storied.deploy.local import LocalCluster

            self.cluster = LocalCluster(asynchronous=asynchronous, **cluster_kwargs)
            self._owns_cluster = True
        elif hasattr(address, "scheduler_address"):
            self.cluster = address
        elif not isinstance(address, str):
            raise TypeError(
                f"Client() takes a scheduler address like 'tcp://127.0.0.1:8786' or a cluster "
                f"object, not {type(address).__name__}"
            )
        if cluster_kwargs and not self._owns_cluster:
            raise TypeError(f"unexpected keyword arguments: {sorted(cluster_kwargs)}")
        self._address = address if isinstance(address, str) else None
        self.security = security or (
            self.cluster.security if self.cluster is not None else Security.from_config()
        )
        self._states: dict[str, FutureState] = {}
        #: live Future objects per key, and the lock guarding it together with ``_states``
        self._refcount: dict[str, int] = {}
        self._ref_lock = threading.Lock()
        self._unsent: list[dict[str, Any]] = []
        self._cancel_fence = CancelFence()
        self._silence_timeout: float | None = None
        self._function_cache: dict[Any, tuple[str, bytes]] = {}
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callback_executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="storied-callback"
        )
        self.status = "newly-created"
        self._stream: Stream | None = None
        #: set while the link to the scheduler is up (or the client gave up on it)
        self._connected = asyncio.Event()
        #: why the client gave up reconnecting, for the calls that needed the link
        self._connection_lost: str | None = None
        self.scheduler_id: str | None = None
        self._pool: ConnectionPool | None = None
        self._loop_thread: LoopThread | None = None
        if asynchronous:
            self._loop = asyncio.get_event_loop()
        else:
            self._loop_thread = LoopThread.acquire()
            self._loop = self._loop_thread.loop
        self._outbox = Outbox(self._loop, self._deliver)
        if not asynchronous:
            assert self._loop_thread is not None
            try:
                self._loop_thread.run(self._start())
            except BaseException:
                self._callback_executor.shutdown(wait=False)
                self._loop_thread.release()
                self._loop_thread = None
                raise
        self._set_as_default = set_as_default
        self._current_tokens: list[contextvars.Token[Client | None]] = []
        if set_as_default:
            push_default(self)
            graph_defaults.client_became_default()

    # ------------------------------------------------------------------ lifecycle

    @property
    def scheduler_address(self) -> str:
        if self._address is None and self.cluster is not None:
            return self.cluster.scheduler_address
        assert self._address is not None
        return self._address

    async def _start(self) -> Client:
        if self.cluster is not None and self._address is None:
            if self.asynchronous and hasattr(self.cluster, "_started"):
                await self.cluster
            self._address = self.cluster.scheduler_address
        self._pool = ConnectionPool(self.security, self._timeout)
        await self._connect(self._timeout)
        self._spawn(self._keep_connected())
        self._spawn(self._watch_scheduler())
        return self

    async def _watch_scheduler(self) -> None:
        """The scheduler sends heartbeats: if it goes silent, drop the link and reconnect."""
        while self.status in ("running", "connecting"):
            await asyncio.sleep(1.0)
            if self.status == "running" and self._stream is not None and self._silence_timeout:
                self._stream.abort_if_silent(self._silence_timeout)

    async def _connect(self, timeout: float) -> None:
        comm = await connect(self.scheduler_address, self.security, timeout)
        comm.name = "client->scheduler"
        await comm.send(
            {"op": "register-client", "client": self.id, "topics": list(self._handlers)}
        )
        reply = await comm.read(self._timeout)
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            await comm.close()
            raise ConnectionError(f"scheduler refused the client: {reply!r}")
        self.scheduler_id = reply.get("id")
        #: the scheduler's heartbeat contract: silence this long means the link is gone
        self._silence_timeout = reply.get("silence_timeout")
        self._cancel_fence.clear()
        self._stream = Stream(comm, self._stream_handlers(), "client stream")
        self.status = "running"
        self._connected.set()
        logger.debug("Client %s connected to %s", self.id, self.scheduler_address)

    async def _keep_connected(self) -> None:
        """Serve the stream; when it drops, reconnect (``storied.client.reconnect``)."""
        while True:
            assert self._stream is not None
            await self._stream.run()
            if self.status != "running" or not await reconnect(self):
                return

    async def _until_connected(self, timeout: float | None = None) -> None:
        """A call needing the scheduler while the client reconnects waits for the link (at
        most ``timeout`` seconds; None: until the client reconnects or gives up)."""
        if self.status == "connecting":
            try:
                await asyncio.wait_for(self._connected.wait(), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"the client did not reconnect to {self.scheduler_address} within {timeout}s"
                ) from None
        if self.status != "running":
            why = f": {self._connection_lost}" if self._connection_lost else ""
            raise RuntimeError(f"the client is {self.status}{why}; create a new Client")

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._start().__await__()

    def __enter__(self) -> Client:
        self._enter_as_current()
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit_as_current()
        self.close()

    async def __aenter__(self) -> Client:
        if self.status != "running":
            await self._start()
        self._enter_as_current()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._exit_as_current()
        await self._close()

    def _enter_as_current(self) -> None:
        """A default client in a ``with`` block is the current one there, as in Dask."""
        if self._set_as_default:
            self._current_tokens.append(set_current(self))

    def _exit_as_current(self) -> None:
        if self._current_tokens:
            with contextlib.suppress(ValueError):  # left in another thread or task
                reset_current(self._current_tokens.pop())

    def __getattr__(self, name: str) -> Any:
        """dask.distributed names storied does not support say so (``storied.compat``)."""
        raise missing("Client", name)

    def __repr__(self) -> str:
        return f"<Client: {self.id} scheduler={self._address!r} status={self.status}>"

    def close(self) -> Any:
        """Release every future, disconnect, and close the cluster if this client made it."""
        if self.asynchronous:
            return self._close()
        if self._loop_thread is None:
            return None
        try:
            # also while reconnecting: the tasks that keep the link up must end too
            self._loop_thread.run(self._close(), timeout=30)
        finally:
            if self._owns_cluster and self.cluster is not None:
                self.cluster.close()
            self._callback_executor.shutdown(wait=True)
            self._loop_thread.release()
            self._loop_thread = None
        return None

    async def _close(self) -> None:
        # a client that gave up reconnecting is closed but still has its loop's tasks to end
        if self.status == "closing" or (self.status == "closed" and not self._connection_lost):
            return
        self._connection_lost = None
        self.status = "closing"
        remove_default(self)
        if global_client() is None:
            graph_defaults.no_default_client()
        self._flush_outbox()
        if self._stream is not None:
            self._stream.send({"op": "close-client"})
            await self._stream.close()
        if self._pool is not None:
            await self._pool.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.asynchronous:
            if self._owns_cluster and self.cluster is not None:
                await self.cluster._close()
            self._callback_executor.shutdown(wait=False)
        self.status = "closed"

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _sync(
        self, func: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Run coroutine function ``func`` on the loop: awaitable if asynchronous, else blocking."""
        if self.asynchronous:
            return func(*args, **kwargs)
        if self._loop_thread is None:  # closed; calls needing the scheduler check the status
            raise RuntimeError(f"the client is {self.status}; create a new Client")
        return self._loop_thread.run(func(*args, **kwargs))

    def _sync_waiting(self, futures: Any, func: Callable[..., Any], *args: Any) -> Any:
        """``_sync`` for a call that waits for ``futures`` (any nesting): a task holding one of
        its worker's thread slots gives it up while any of them is pending, so the tasks it
        waits for can run there, and takes one back after (``storied.worker.secede``)."""
        if not self.asynchronous and task_holds_thread_slot():
            found: list[Future] = []
            _collect_futures(futures, found)
            if not all(future._state.done for future in found):
                with slot_given_up_while_waiting():
                    return self._sync(func, *args)
        return self._sync(func, *args)

    # ------------------------------------------------------------------ messages out

    def _send(self, msg: Any) -> None:
        """Queue a message for the scheduler from any thread; one loop wake-up per burst."""
        self._outbox.put(msg)

    def _flush_outbox(self) -> None:
        self._outbox.flush()

    def _deliver(self, items: list[Any]) -> None:
        """Coalesce queued submits and releases into few messages and send them (on the loop).

        While reconnecting, messages wait in ``_unsent``: nothing submitted is lost.
        """
        msgs = self._unsent
        graph: dict[str, Any] | None = None
        releases: dict[str, Any] | None = None
        for item in items:
            if type(item) is str:
                with self._ref_lock:
                    if self._refcount.get(item):
                        continue  # a new Future for this key appeared meanwhile
                    self._states.pop(item, None)
                if releases is None:
                    releases = {
                        "op": "client-releases-keys",
                        "keys": [],
                        "stimulus_id": _stimulus("client-releases"),
                    }
                    msgs.append(releases)
                    graph = None
                releases["keys"].append(item)
            elif isinstance(item, _GraphPart):
                releases = None
                if graph is None or item.alone or graph["fifo_timeout"] != item.fifo_timeout:
                    graph = {
                        "op": "update-graph",
                        "tasks": [],
                        "functions": {},
                        "wanted": [],
                        "stimulus_id": _stimulus("update-graph"),
                        "fifo_timeout": item.fifo_timeout,
                        "calls": [],
                    }
                    msgs.append(graph)
                graph["tasks"].extend(item.tasks)
                graph["functions"][item.function_id] = item.function
                graph["wanted"].extend(item.wanted)
                graph["calls"].append(len(item.tasks))
                if item.alone:
                    graph = None
            else:
                graph = releases = None
                msgs.append(item)
        stream = self._stream
        if msgs and stream is not None and not stream.closed:
            stream.extend(msgs)
            self._unsent = []

    # ------------------------------------------------------------------ messages in

    def _stream_handlers(self) -> dict[str, Callable[..., Any]]:
        states = self._states
        # messages about a key whose cancel the scheduler has not answered yet are about the
        # cancelled submission: they must not touch a resubmission of the key
        stale = self._cancel_fence.pending

        def key_in_memory(
            key: str,
            type: str | None = None,
            workers: list[str] | None = None,
            data: bytes | None = None,
        ) -> None:
            state = None if key in stale else states.get(key)
            if state is not None:
                state.finish(type, workers or [], data)

        def task_erred(key: str, **error: Any) -> None:
            state = None if key in stale else states.get(key)
            if state is not None:
                state.fail(error)

        def lost_data(key: str) -> None:
            state = None if key in stale else states.get(key)
            if state is not None:
                state.reset()

        def lost_key(key: str) -> None:
            state = None if key in stale else states.get(key)
            if state is not None:
                state.lose()

        def cancelled_keys(
            keys: list[str], stimulus_id: str, dependents: list[str] | None = None
        ) -> None:
            # the answer to this client's cancel (whose own futures it cancelled when it sent
            # it), naming the dependents cancelled with them; or another client's forced cancel
            cancel_born = self._cancel_fence.lift(stimulus_id)
            for key in (*keys, *(dependents or ())):
                state = states.get(key)
                if state is not None and (cancel_born is None or state.born < cancel_born):
                    _cancel_state(state)

        def graph_rejected(keys: list[str], text: str) -> None:
            for key in keys:
                state = None if key in stale else states.get(key)
                if state is not None:
                    state.fail({"exception": pickle_dumps(ValueError(text)), "text": text})

        return {
            "key-in-memory": key_in_memory,
            "task-erred": task_erred,
            "lost-data": lost_data,
            "lost-key": lost_key,
            "cancelled-keys": cancelled_keys,
            "graph-rejected": graph_rejected,
            "heartbeat": lambda: None,
            "event": self._handle_event,
            "restarted": self._restarted,
        }

    def _handle_event(self, topic: str, event: list[Any]) -> None:
        handler = self._handlers.get(topic)
        if handler is None:
            return
        try:
            result = handler((event[0], event[1]))
            if inspect.isawaitable(result):
                self._spawn(self._await_handler(topic, result))
        except Exception:
            logger.exception("Event handler for topic %r failed", topic)

    async def _await_handler(self, topic: str, awaitable: Any) -> None:
        try:
            await awaitable
        except Exception:
            logger.exception("Event handler for topic %r failed", topic)

    # ------------------------------------------------------------------ futures

    def _acquire(self, keys: list[str]) -> list[FutureState]:
        """One more Future for each key: its shared state, created if need be (any thread)."""
        states, refcount = self._states, self._refcount
        acquired = []
        with self._ref_lock:
            for key in keys:
                state = states.get(key)
                # a cancelled key whose Futures are all gone is submitted afresh, as in Dask
                if state is None or (state.status == "cancelled" and not refcount.get(key)):
                    state = states[key] = FutureState()
                elif not refcount.get(key):
                    # its Futures were gone (their release not sent yet): a new submission, as
                    # far as a cancel sent meanwhile is concerned (``CancelFence.lift``)
                    state.born = next(births)
                refcount[key] = refcount.get(key, 0) + 1
                acquired.append(state)
        return acquired

    def _dec_ref(self, key: str) -> None:
        """A Future went away (any thread); the last one for a key releases it."""
        with self._ref_lock:
            count = self._refcount[key] - 1
            if count:
                self._refcount[key] = count
                return
            del self._refcount[key]
        if self.status in USABLE:
            self._outbox.put(key)  # a bare key in the outbox means: release it

    def _function_payload(self, func: Callable[..., Any]) -> tuple[str, bytes]:
        try:
            cached = self._function_cache.get(func)
        except TypeError:
            cached = None
        if cached is not None:
            return cached
        payload = pickle_dumps(func)
        entry = (token(payload), payload)
        try:
            if len(self._function_cache) > 1000:
                self._function_cache.clear()
            self._function_cache[func] = entry
        except TypeError:
            pass
        return entry

    def submit(
        self,
        func: Callable[..., Any],
        *args: Any,
        key: str | None = None,
        workers: Any = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: float = 0,
        fifo_timeout: str | float = "100 ms",
        allow_other_workers: bool = False,
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        **kwargs: Any,
    ) -> Future:
        """Run ``func(*args, **kwargs)`` on a worker; returns a Future for the result.

        The options are Dask's: ``workers`` (addresses or names; with ``allow_other_workers``
        only preferred), ``resources`` claimed while it runs (``{"GPU": 1}``), ``retries``,
        ``priority`` (higher runs first; ties by submission, where submissions within
        ``fifo_timeout`` of each other count as one), ``pure=False`` for a fresh key each call.
        ``actor=True``: ``func`` is a class whose instance stays on the worker; the future's
        result is an ``Actor`` proxy to it (see ``storied.coordination.actor``).
        """
        if not callable(func):
            raise TypeError(f"submit() needs a callable as its first argument, not {func!r}")
        options = task_options(
            workers, resources, retries, priority, allow_other_workers, fifo_timeout
        )
        if actor or actors:
            return submit_actor(self, func, args, kwargs, key, options)
        return self._submit_many(
            func, [(args, kwargs)], [key] if key is not None else None, pure, options
        )[0]

    def map(
        self,
        func: Callable[..., Any],
        *iterables: Iterable[Any],
        key: str | list[str] | None = None,
        workers: Any = None,
        retries: int | None = None,
        resources: dict[str, float] | None = None,
        priority: float = 0,
        allow_other_workers: bool = False,
        fifo_timeout: str | float = "100 ms",
        actor: bool = False,
        actors: bool = False,
        pure: bool = True,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> list[Future]:
        """``submit`` for each element of the iterables, in one message to the scheduler
        (``batch_size``: in messages of that many tasks). Takes ``submit``'s options."""
        if not callable(func):
            raise TypeError(f"map() needs a callable as its first argument, not {func!r}")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise TypeError(f"batch_size must be a positive int or None, not {batch_size!r}")
        options = task_options(
            workers, resources, retries, priority, allow_other_workers, fifo_timeout
        )
        calls = [(args, kwargs) for args in zip(*iterables, strict=False)]
        keys = None
        if isinstance(key, list):
            if len(key) != len(calls):
                raise ValueError(f"map() got {len(key)} keys for {len(calls)} tasks")
            keys = key
        if actor or actors:
            names = keys or [None] * len(calls)
            return [
                submit_actor(self, func, args, kw, name, options)
                for (args, kw), name in zip(calls, names, strict=True)
            ]
        prefix = key if isinstance(key, str) else None
        if batch_size is None or batch_size >= len(calls):
            return self._submit_many(func, calls, keys, pure, options, prefix)
        futures: list[Future] = []
        for start in range(0, len(calls), batch_size):
            stop = start + batch_size
            batch_keys = keys[start:stop] if keys is not None else None
            futures += self._submit_many(
                func, calls[start:stop], batch_keys, pure, options, prefix, alone=True
            )
        return futures

    def _submit_many(
        self,
        func: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        keys: list[str] | None,
        pure: bool,
        chosen: TaskOptions,
        prefix: str | None = None,
        alone: bool = False,
    ) -> list[Future]:
        """One submit/map call (``alone``: a batch, sent in a message of its own)."""
        if self.status not in USABLE:
            raise RuntimeError(f"the client is {self.status}; cannot submit")
        retries, restrictions, options, fifo_timeout = chosen
        function_id, function = self._function_payload(func)
        name = prefix or funcname(func)
        tasks: list[list[Any]] = []
        for i, (args, kwargs) in enumerate(calls):
            payload, deps = dumps_with_refs((args, kwargs), _task_ref)
            if keys is not None:
                key = keys[i]
                if not isinstance(key, str):
                    raise TypeError(f"key must be a str, not {type(key).__name__}")
            elif pure:
                key = f"{name}-{token(function_id.encode(), payload)}"
            else:
                key = f"{name}-{uuid.uuid4().hex}"
            tasks.append([key, function_id, payload, deps, retries, restrictions, options])
        task_keys = [task[0] for task in tasks]
        states = self._acquire(task_keys)
        futures = [Future(k, self, state) for k, state in zip(task_keys, states, strict=True)]
        self._send(_GraphPart(tasks, function_id, function, task_keys, fifo_timeout, alone))
        return futures

    # ------------------------------------------------------------------ results

    def gather(
        self,
        futures: Any,
        errors: str = "raise",
        direct: bool | None = None,
        asynchronous: bool | None = None,
    ) -> Any:
        """Wait for futures (in any nesting of lists, tuples and dicts) and fetch their values
        (always straight from the workers: ``direct`` is accepted, as Dask's, and changes
        nothing). ``asynchronous=True``: an awaitable, for coroutines a blocking client runs
        on its loop (``client.sync``), as in Dask."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', not {errors!r}")
        if asynchronous:
            return self._gather_structure(futures, errors)
        return self._sync_waiting(futures, self._gather_structure, futures, errors)

    async def _gather_structure(self, structure: Any, errors: str) -> Any:
        found: list[Future] = []
        _collect_futures(structure, found)
        values = await self._gather_async(found, errors)
        by_key = {f.key: v for f, v in zip(found, values, strict=True) if v is not _SKIPPED}
        return _rebuild(structure, by_key, errors)

    async def _gather_async(
        self, futures: list[Future], errors: str, timeout: float | None = None
    ) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        unique = {f.key: f._state for f in futures}
        values: dict[str, Any] = {}
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            await wait_states(list(unique.values()), remaining)
            by_worker: dict[str, list[str]] = collections.defaultdict(list)
            for key, state in unique.items():
                if key in values:
                    continue
                if state.status == "finished":
                    if state.data is not None:
                        values[key] = pickle_loads(state.data)
                    elif state.workers:
                        by_worker[state.workers[0]].append(key)
                    else:
                        state.reset()
                        self._send({"op": "client-desires-keys", "keys": [key]})
                elif errors == "raise":
                    raise state.exception_object()
                else:
                    values[key] = _SKIPPED
            if not by_worker:
                if all(state.done for state in unique.values()):
                    break
                continue  # some data was lost: wait for it to be recomputed
            replies = await asyncio.gather(
                *(self._fetch(worker, keys) for worker, keys in by_worker.items()),
                return_exceptions=True,
            )
            missing: list[str] = []
            for keys, reply in zip(by_worker.values(), replies, strict=True):
                if isinstance(reply, BaseException):
                    if isinstance(reply, TypeError):
                        raise reply
                    missing.extend(keys)
                    continue
                for key in keys:
                    if key in reply:
                        values[key] = reply[key]
                    else:
                        missing.append(key)
            if missing:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                await self._refresh_locations(missing, remaining)
        return [values[f.key] for f in futures]

    async def _fetch(self, worker: str, keys: list[str]) -> dict[str, Any]:
        assert self._pool is not None
        fetched = await request_data(self._pool, worker, keys)
        if fetched.errors:
            key, text = next(iter(fetched.errors.items()))
            raise TypeError(f"the result of {key!r} could not be sent from its worker: {text}")
        return {key: pickle_loads(payload) for key, payload in fetched.data.items()}

    async def _refresh_locations(self, keys: list[str], timeout: float | None) -> None:
        await self._until_connected(timeout)
        who_has = await self._request("who-has", keys=keys)
        for key, workers in who_has.items():
            state = self._states.get(key)
            if state is None or state.status != "finished":
                continue  # e.g. cancelled: the client reconnected to a new scheduler
            if workers:
                state.workers = workers
            else:
                state.reset()
                self._send({"op": "client-desires-keys", "keys": [key]})
        await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ dask collections

    def get(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Compute ``keys`` of dask graph ``dsk`` on the cluster (``sync=False``: futures)."""
        from storied.graph import api

        return api.get(self, dsk, keys, **kwargs)

    def compute(self, collections: Any, sync: bool = False, **kwargs: Any) -> Any:
        """Start computing dask collections; a Future for each (values if ``sync``)."""
        from storied.graph import api

        return api.compute(self, collections, sync=sync, **kwargs)

    def futures_of(self, futures: Any) -> list[Future]:
        """The futures in a structure or collection, as ``storied.futures_of``; raises
        ``CancelledError`` naming the cancelled ones if any was cancelled, as Dask's does."""
        found = futures_of(futures)
        cancelled = [future.key for future in found if future.cancelled()]
        if cancelled:
            raise CancelledError(f"these futures were cancelled: {cancelled}")
        return found

    def persist(self, collections: Any, **kwargs: Any) -> Any:
        """The same dask collections, backed by futures computing on the cluster."""
        from storied.graph import api

        return api.persist(self, collections, **kwargs)

    def scatter(
        self,
        data: Any,
        workers: Any = None,
        broadcast: bool = False,
        hash: bool = True,
        direct: bool | None = None,
    ) -> Any:
        """Send local data to workers; returns futures in the same shape as ``data``.

        Keys are the data's hash, so equal data is one key; ``hash=False``: random keys. The
        data always goes straight to the workers: ``direct`` is accepted, as Dask's, and
        changes nothing.
        """
        return self._sync(self._scatter, data, workers, broadcast, hash)

    async def _scatter(self, data: Any, workers: Any, broadcast: bool, hash: bool = True) -> Any:
        assert self._pool is not None
        data, whole = scatter_shape.as_scattered(data)
        # each value is pickled once: its key is the token of its pickle
        if type(data) is dict:
            items = [(key, dumps_data(value)) for key, value in data.items()]
        else:
            values = [data] if whole else data
            items = []
            for value in values:
                payload = dumps_data(value)
                items.append((_scatter_key(value, payload, hash), payload))
        info = await self._request("scheduler-info")
        addresses = list(info["workers"])
        if workers is not None:
            wanted = set(worker_restrictions(workers) or ())
            addresses = [
                a for a in addresses if a in wanted or info["workers"][a]["name"] in wanted
            ]
        if not addresses:
            raise RuntimeError("no workers to scatter to; wait_for_workers() first")
        placement: dict[str, dict[str, bytes | Pickled]] = collections.defaultdict(dict)
        for i, (key, payload) in enumerate(items):
            targets = addresses if broadcast else [addresses[i % len(addresses)]]
            for address in targets:
                placement[address][key] = payload
        replies = await asyncio.gather(
            *(
                self._pool.request(address, {"op": "update_data", "data": chunk})
                for address, chunk in placement.items()
            )
        )
        who_has: dict[str, list[str]] = collections.defaultdict(list)
        nbytes: dict[str, int] = {}
        types: dict[str, str] = {}
        for address, reply in zip(placement, replies, strict=True):
            for key in placement[address]:
                who_has[key].append(address)
            nbytes.update(reply["nbytes"])
            types.update(reply["types"])
        futures = {key: Future(key, self) for key, _ in items}
        await self._request("update-data", who_has=dict(who_has), nbytes=nbytes, types=types)
        if type(data) is dict:
            return futures
        ordered = [futures[key] for key, _ in items]
        return ordered[0] if whole else scatter_shape.shaped_like(data, ordered)

    def cancel(self, futures: Any, force: bool = False, **kwargs: Any) -> Any:
        """Stop computing these futures and their dependents; they are ``cancelled`` when
        this returns, their dependents once the scheduler answers, as in Dask. Keys another
        client wants stay computed for it unless ``force`` (``reason`` and ``msg`` are
        accepted for compatibility)."""
        found: list[Future] = []
        _collect_futures(futures, found)
        return self._sync(self._cancel, found, force)

    async def _cancel(self, found: list[Future], force: bool = False) -> None:
        for future in found:
            _cancel_state(future._state)
            # as Dask drops a cancelled future's state: a result or error of the cancelled
            # submission still on its way cannot undo the cancel, and a new submission of
            # the key starts afresh
            with self._ref_lock:
                if self._states.get(future.key) is future._state:
                    del self._states[future.key]
        keys = list(dict.fromkeys(f.key for f in found))
        stimulus_id = self._cancel_fence.raise_for(keys)
        self._send({"op": "cancel", "keys": keys, "stimulus_id": stimulus_id, "force": force})

    # ------------------------------------------------------------------ published datasets

    def publish_dataset(self, *args: Any, **kwargs: Any) -> Any:
        """Publish named data or futures, kept alive for any client until unpublished:
        ``publish_dataset(x=future)`` or ``publish_dataset(future, name="x")``;
        ``override=True`` replaces a dataset of that name (else that is a KeyError)."""
        return datasets.publish_dataset(self, args, kwargs)

    def get_dataset(self, name: str, default: Any = datasets.NO_DEFAULT) -> Any:
        """A published dataset; its futures are now this client's too."""
        return datasets.get_dataset(self, name, default)

    def list_datasets(self) -> Any:
        return datasets.list_datasets(self)

    def unpublish_dataset(self, name: str) -> Any:
        return datasets.unpublish_dataset(self, name)

    @property
    def datasets(self) -> datasets.Datasets:
        """The published datasets as a mapping: ``client.datasets["x"] = future``."""
        return datasets.Datasets(self)

    def replicate(
        self, futures: Any, n: int | None = None, workers: Any = None, branching_factor: int = 2
    ) -> Any:
        """Copies of these futures' results on ``n`` workers (None: every one) of ``workers``
        (None: all), once they are done; losing a worker then loses no copy-held result.
        ``branching_factor`` is accepted for Dask's sake: copies come from any holder."""
        found = futures_of(futures)
        return self._sync_waiting(
            found,
            replicas.replicate,
            self,
            found,
            replicas.check_copies(n),
            replicas.check_workers(workers),
        )

    def rebalance(self, futures: Any = None, workers: Any = None) -> Any:
        """Move results between ``workers`` (None: all) so each holds about as many bytes of
        them (of these futures', or of all results when None)."""
        found = None if futures is None else futures_of(futures)
        return self._sync_waiting(
            found or [], replicas.rebalance, self, found, replicas.check_workers(workers)
        )

    def retry(self, futures: Any) -> Any:
        """Run these failed futures again, with the failed tasks they depend on."""
        return self._sync(self._retry, futures_of(futures))

    async def _retry(self, futures: list[Future]) -> None:
        for future in futures:
            if future._state.status == "error":
                future._state.reset()  # before asking: the new outcome may come first
        await self._request("retry", keys=list(dict.fromkeys(f.key for f in futures)))

    def recreate_error_locally(self, future: Any) -> Any:
        """Run the task that caused ``future``'s error here, with its inputs fetched, so the
        exception is raised in this process (for a debugger)."""
        return recreate_error_locally(self, future)

    def get_executor(self, **kwargs: Any) -> Any:
        """A ``concurrent.futures.Executor`` running calls on the cluster through this client;
        ``kwargs`` (``pure``, ``workers``, ``resources``, ``allow_other_workers``, ``retries``)
        go to every ``submit``."""
        return ClientExecutor(self, **kwargs)

    def sync(
        self,
        func: Callable[..., Any],
        *args: Any,
        asynchronous: bool | None = None,
        callback_timeout: float | str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run coroutine function ``func(*args, **kwargs)`` on this client's event loop and
        return its result; with an asynchronous client, the awaitable."""
        timeout = config.parse_timedelta(callback_timeout)
        if asynchronous or (asynchronous is None and self.asynchronous):
            awaitable = func(*args, **kwargs)
            return awaitable if timeout is None else asyncio.wait_for(awaitable, timeout)
        if self._loop_thread is None:
            raise RuntimeError(f"the client is {self.status}; create a new Client")
        return self._loop_thread.run(_awaited(func, args, kwargs), timeout=timeout)

    @classmethod
    def current(cls, allow_global: bool = True) -> Client:
        """The client of ``as_current()`` here; else, with ``allow_global``, the default one.
        ``ValueError`` if there is none."""
        return current_client(allow_global)

    @contextlib.contextmanager
    def as_current(self) -> Iterator[None]:
        """Make this the current client (``Client.current()``, ``default_client()``, futures
        unpickled here) for this thread or asyncio task, until the block ends."""
        token = set_current(self)
        try:
            yield
        finally:
            reset_current(token)

    def _adopt(self, key: str) -> FutureState:
        """A Future of ``key`` arrived from elsewhere (unpickled): its state in this client,
        and the scheduler told that this client wants the key too."""
        known = key in self._states
        state = self._acquire([key])[0]
        if not known:
            self._send({"op": "client-desires-keys", "keys": [key]})
        return state

    # ------------------------------------------------------------------ cluster

    def run(
        self,
        func: Callable[..., Any],
        *args: Any,
        workers: Any = None,
        wait: bool = True,
        nanny: bool = False,
        on_error: str = "raise",
        **kwargs: Any,
    ) -> Any:
        """Run ``func`` on every worker (or ``workers``); returns ``{address: result}``.
        ``on_error``: ``"raise"`` the first failure, ``"return"`` or ``"ignore"`` them."""
        run_errors.check_options(wait, nanny, on_error)
        return self._sync(self._run, func, args, kwargs, workers, on_error)

    async def _run(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        workers: Any,
        on_error: str = "raise",
    ) -> dict[str, Any]:
        replies = await self._request(
            "broadcast",
            function=pickle_dumps(func if on_error == "raise" else run_errors.CatchErrors(func)),
            args=pickle_dumps((args, kwargs)),
            workers=worker_restrictions(workers),
        )
        results = {address: pickle_loads(payload) for address, payload in replies.items()}
        return run_errors.outcome(results, on_error)

    def get_versions(self, check: bool = False, packages: list[str] | None = None) -> Any:
        """Python and package versions of this client, the scheduler and each worker, as
        Dask's; ``check=True`` raises ``ValueError`` where needed ones differ."""
        return self._sync(versions.get_versions, self, check, packages)

    def run_on_scheduler(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` in the scheduler's process (it may take ``dask_scheduler``)."""
        return self._sync(self._run_on_scheduler, func, args, kwargs)

    async def _run_on_scheduler(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return pickle_loads(
            await self._request(
                "run-on-scheduler", function=pickle_dumps(func), args=pickle_dumps((args, kwargs))
            )
        )

    async def _request(self, method: str, **kwargs: Any) -> Any:
        """Ask the scheduler; while the client reconnects, once it has (or raise if it gave up)."""
        await self._until_connected()
        self._flush_outbox()
        assert self._stream is not None
        return await self._stream.request(method, **kwargs)

    def scheduler_info(self) -> Any:
        return self._sync(self._request, "scheduler-info")

    @property
    def dashboard_link(self) -> str | None:
        """The scheduler's dashboard (its status page), or None when it serves none."""
        if self.cluster is not None and hasattr(self.cluster, "dashboard_link"):
            return self.cluster.dashboard_link
        if self.asynchronous:
            raise RuntimeError(
                "an asynchronous client cannot block to ask: read "
                "(await client.scheduler_info())['dashboard'] instead"
            )
        return self.scheduler_info().get("dashboard")

    def wait_for_workers(self, n_workers: int = 1, timeout: float | None = None) -> Any:
        """Block until at least ``n_workers`` workers have joined."""
        if not isinstance(n_workers, int) or n_workers < 0:
            raise TypeError(f"n_workers must be a non-negative int, not {n_workers!r}")
        return self._sync(self._wait_for_workers, n_workers, timeout)

    async def _wait_for_workers(self, n_workers: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = await self._request("scheduler-info")
            if len(info["workers"]) >= n_workers:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(info['workers'])} of {n_workers} workers after {timeout}s"
                )
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ the record

    def story(
        self, *keys_or_stimulus_ids: Any, on_error: str = "raise", run: int | str | None = None
    ) -> Any:
        """The cluster-wide story: scheduler and worker transitions merged in time order, each a
        ``StoryEntry``, unpacking as Dask's ``(where, key, start, finish, recommendations,
        stimulus_id, timestamp)``; a failure's traceback rides on the transition it caused.

        With a ledger, ``run`` picks the runs: this one (None), "all" on file, or a run id.
        """
        if on_error not in ("raise", "ignore"):
            raise ValueError(f"on_error must be 'raise' or 'ignore', not {on_error!r}")
        _check_run(run)
        keys = _key_strings("story", keys_or_stimulus_ids)
        return self._sync(self._story, keys, on_error, "current" if run is None else run)

    async def _story(self, keys: list[str], on_error: str, run: int | str) -> list[StoryEntry]:
        """Page by page (newest first), so the scheduler holds one page of a long story."""
        pages = []
        before_seq = None
        while True:
            page = await self._request(
                "story-page", keys=keys, on_error=on_error, before_seq=before_seq, run=run
            )
            pages.append(page["entries"])
            before_seq = page["before_seq"]
            if before_seq is None:
                break
        entries = [entry for page in reversed(pages) for entry in page]
        entries.sort(key=lambda entry: entry["timestamp"])
        return [StoryEntry(entry) for entry in entries]

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log a structured event to the scheduler's ledger (no round trip)."""
        topics, packed = pack_event(topic, msg)
        self._send({"op": "log-event", "topic": topics, "packed": packed})
        return None if not self.asynchronous else _done_coroutine()  # type: ignore[return-value]

    def get_events(
        self,
        topic: str | None = None,
        detail: bool = False,
        *,
        limit: int | None = None,
        since: float | datetime.datetime | None = None,
        until: float | datetime.datetime | None = None,
        run: int | str | None = None,
    ) -> Any:
        """Events of ``topic`` as ``((timestamp, msg), ...)`` oldest first; all topics if None.

        ``limit`` keeps the newest that many (per topic); ``since``/``until`` (epoch seconds
        or datetimes) keep those logged in ``[since, until)``. Read page by page, so a large
        topic costs the scheduler one page of memory at a time (docs/logging.md). With a ledger,
        ``run`` picks the runs: this one (None), "all" on file, or a run id.
        """
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be a str or None, not {type(topic).__name__}")
        _check_run(run)
        window = check_window(limit, since, until)
        run_asked = "current" if run is None else run
        return self._sync(read_events, self._request, topic, detail, *window, run_asked)

    def subscribe_topic(self, topic: str, handler: Callable[[Any], Any]) -> None:
        """Call ``handler((timestamp, msg))`` for each new event of ``topic``."""
        if not isinstance(topic, str):
            raise TypeError(f"topic must be a str, not {type(topic).__name__}")
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {handler!r}")
        self._handlers[topic] = handler
        self._send({"op": "subscribe-topic", "topic": topic})

    def unsubscribe_topic(self, topic: str) -> None:
        if topic not in self._handlers:
            raise ValueError(f"not subscribed to topic {topic!r}")
        del self._handlers[topic]
        self._send({"op": "unsubscribe-topic", "topic": topic})

    def timeline(self, filename: str | os.PathLike[str] | None = None) -> Any:
        """Recent task executions as a Chrome trace / Perfetto dict, also written to ``filename``.

        One track per worker thread, one slice per task run. The full history of a durable
        scheduler is exported by ``storied timeline --ledger PATH -o trace.json``.
        """
        return self._sync(self._timeline, filename)

    async def _timeline(self, filename: str | os.PathLike[str] | None) -> dict[str, Any]:
        trace = chrome_trace(await self._request("executions"))
        if filename is not None:
            Path(filename).write_text(json.dumps(trace))
        return trace

    def get_task_stream(
        self,
        start: float | str | None = None,
        stop: float | str | None = None,
        count: int | None = None,
        plot: bool | str = False,
    ) -> Any:
        """Task executions as Dask's task stream: dicts with ``key``, ``name``, ``worker``,
        ``thread``, ``status`` and ``startstops``; ``start``/``stop`` a time or ``"60s"`` ago.
        The ``with get_task_stream() as ts:`` form is ``storied.get_task_stream``."""
        from storied.diagnostics.task_stream import refuse_plot, task_stream

        refuse_plot(plot)
        return self._sync(task_stream, self, start, stop, count)

    def get_scheduler_logs(self, n: int | None = None) -> Any:
        """The scheduler's recent log records as (level, message), newest first."""
        return self._sync(self._request_list, "get-scheduler-logs", n=n)

    def get_worker_logs(self, n: int | None = None, workers: Any = None) -> Any:
        """Each worker's recent log records, keyed by worker address."""
        return self._sync(self._worker_logs, n, workers)

    def get_task_logs(self, *keys: Any) -> list[dict[str, Any]]:
        """What these tasks logged and printed, oldest first, as the live workers hold it
        (with ``worker.capture-task-logs``; the ledger keeps it after them: ``storied logs
        --key``)."""
        reply = self._sync(self._request, "log-entries", keys=_key_strings("get_task_logs", keys))
        return [LogRecordEntry(*entry).as_dict() for entry in reply]

    def get_worker_metrics(self, workers: Any = None, since: float | None = None) -> Any:
        """Each worker's resource samples (one a heartbeat: CPU, memory, spilled bytes,
        open sockets, bytes moved), oldest first, keyed by worker address; departed workers'
        too. ``workers``: addresses or names; ``since``: only samples from then (epoch s).
        Dask has no equivalent (its ``scheduler_info()`` holds only the newest sample)."""
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)):
            raise TypeError(f"since must be a time in seconds since the epoch, not {since!r}")
        return self._sync(
            self._request, "worker-metrics", workers=worker_restrictions(workers), since=since
        )

    async def _request_list(self, method: str, **kwargs: Any) -> list[tuple[str, str]]:
        return [tuple(entry) for entry in await self._request(method, **kwargs)]  # type: ignore[misc]

    async def _worker_logs(self, n: int | None, workers: Any) -> dict[str, list[tuple[str, str]]]:
        reply = await self._request("get-worker-logs", n=n, workers=worker_restrictions(workers))
        return {address: [tuple(e) for e in entries] for address, entries in reply.items()}  # type: ignore[misc]

    # ------------------------------------------------------------------ plugins

    def register_plugin(
        self, plugin: SchedulerPlugin | WorkerPlugin, name: str | None = None
    ) -> Any:
        """Register a scheduler or worker plugin (workers joining later get it too)."""
        if isinstance(plugin, SchedulerPlugin):
            method = "register-scheduler-plugin"
        elif isinstance(plugin, WorkerPlugin):
            method = "register-worker-plugin"
        else:
            raise TypeError(
                f"register_plugin() takes a SchedulerPlugin or WorkerPlugin instance, "
                f"not {type(plugin).__name__}"
            )
        return self._sync(
            self._request,
            method,
            plugin=pickle_dumps(plugin),
            name=plugin_name(plugin, name),
            idempotent=bool(getattr(plugin, "idempotent", False)),
        )

    def unregister_scheduler_plugin(self, name: str) -> Any:
        return self._sync(self._request, "unregister-scheduler-plugin", name=name)

    def unregister_worker_plugin(self, name: str) -> Any:
        return self._sync(self._request, "unregister-worker-plugin", name=name)

    def _run_callback(self, fn: Callable[[Future], Any], future: Future) -> None:
        try:
            fn(future)
        except Exception:
            logger.exception("Future callback %r failed", fn)


class _GraphPart(NamedTuple):
    """The tasks of one submit/map call (or of one batch of a map) on their way out."""

    tasks: list[list[Any]]
    function_id: str
    function: bytes
    wanted: list[str]
    #: submissions this close together (seconds) share a priority generation on the scheduler
    fifo_timeout: float = DEFAULT_FIFO_TIMEOUT
    #: sent in an update-graph message of its own (a map's batch)
    alone: bool = False


_SKIPPED = object()


def _key_strings(method: str, keys: Iterable[Any]) -> list[str]:
    """Futures, tuple keys and str keys (or stimulus ids) as the str keys the record uses."""
    strings = [
        k.key if isinstance(k, Future) else stringify(k) if isinstance(k, tuple) else k
        for k in keys
    ]
    for key in strings:
        if not isinstance(key, str):
            raise TypeError(f"{method}() takes keys or stimulus ids (str), not {key!r}")
    return strings


def _cancel_state(state: FutureState) -> None:
    """Finished and failed futures are cancelled too, as in Dask: the scheduler lets go of
    their results for this client, so they are no longer to be had."""
    if state.status != "cancelled":
        state.cancel()


async def _done_coroutine() -> None:
    return None


async def _awaited(func: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    result = func(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _scatter_key(value: Any, payload: Any, hashed: bool) -> str:
    """``type-digest``: of the value's pickle ``payload``, or random (``hashed=False``)."""
    digest = token(payload) if hashed else uuid.uuid4().hex
    return f"{typename(value).split('.')[-1]}-{digest}"


def _collect_futures(structure: Any, found: list[Future]) -> None:
    if isinstance(structure, Future):
        found.append(structure)
    elif isinstance(structure, (list, tuple, set, frozenset)):
        for item in structure:
            _collect_futures(item, found)
    elif isinstance(structure, dict):
        for item in structure.values():
            _collect_futures(item, found)
    elif isinstance(structure, Iterator):
        raise TypeError("gather() takes futures or collections of them, not an iterator")


def _rebuild(structure: Any, values: dict[str, Any], errors: str) -> Any:
    if isinstance(structure, Future):
        return values.get(structure.key)
    if isinstance(structure, (list, tuple)):
        items = [
            _rebuild(item, values, errors)
            for item in structure
            if not (isinstance(item, Future) and item.key not in values)
        ]
        if isinstance(structure, tuple):
            return scatter_shape.shaped_like(structure, items)
        return items
    if isinstance(structure, (set, frozenset)):
        return type(structure)(_rebuild(item, values, errors) for item in structure)
    if isinstance(structure, dict):
        return {
            k: _rebuild(v, values, errors)
            for k, v in structure.items()
            if not (isinstance(v, Future) and v.key not in values)
        }
    return structure


class DoneAndNotDoneFutures(NamedTuple):
    done: set[Future]
    not_done: set[Future]


def wait(
    futures: Any, timeout: float | None = None, return_when: str = "ALL_COMPLETED"
) -> DoneAndNotDoneFutures:
    """Wait until all (or the first of) ``futures`` are done; like ``concurrent.futures.wait``."""
    if return_when not in ("ALL_COMPLETED", "FIRST_COMPLETED"):
        raise ValueError(
            f"return_when must be ALL_COMPLETED or FIRST_COMPLETED, not {return_when!r}"
        )
    found: list[Future] = []
    _collect_futures(futures, found)
    if not found:
        return DoneAndNotDoneFutures(set(), set())
    client = found[0].client
    if client.asynchronous:
        return _wait_async(found, timeout, return_when)  # type: ignore[return-value]
    return client._sync_waiting(found, _wait_async, found, timeout, return_when)


async def _wait_async(
    found: list[Future], timeout: float | None, return_when: str
) -> DoneAndNotDoneFutures:
    states = [f._state for f in found]
    if return_when == "ALL_COMPLETED":
        await wait_states(states, timeout)
    else:
        with contextlib.suppress(TimeoutError):
            await wait_states(states, timeout, at_least=1)
    done = {f for f in found if f.done()}
    return DoneAndNotDoneFutures(done, set(found) - done)


def _check_run(run: object) -> None:
    """``run=`` of the record queries: None (this run), "all", or a run id."""
    if not (run is None or run == "all" or (isinstance(run, int) and not isinstance(run, bool))):
        raise ValueError(f"run must be None (this run), 'all' or a run id (int), not {run!r}")
