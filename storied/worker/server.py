"""The worker's I/O shell: talks to the scheduler and peers, runs tasks in threads.

Decisions are ``WorkerState``'s; this module carries out its instructions (execute, gather,
send, forget) and feeds the outcomes back in as stimuli.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import itertools
import logging
import operator
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from functools import partial
from typing import Any, NamedTuple

import tblib

from storied import config
from storied.comm import Comm, ConnectionPool, Security, connect
from storied.comm.batched import BatchedSend
from storied.comm.core import configured_listener, parse_address
from storied.comm.retry import retry_until
from storied.comm.security import is_loopback
from storied.comm.stream import Stream
from storied.coordination.worker import ACTOR_OPS, WorkerCoordination
from storied.graph.execute import preload_dask
from storied.loop import Outbox, call_on_loop
from storied.plugin import (
    PLUGIN_ERRORS_TOPIC,
    PluginErrors,
    WorkerPlugin,
    call_plugin_hook,
    finish_plugin_hook,
    run_plugin_hook,
    run_setup_hook,
)
from storied.protocol.serialize import (
    Pickled,
    dumps_data,
    loads_with_refs,
    nbytes,
    pickle_dumps,
    pickle_loads,
    typename,
)
from storied.record import LogRecordEntry, NoRecord, Record, TransitionEntry, pack_event
from storied.record.shipments import pack_shipment
from storied.resources import parse_resources
from storied.shm import segments as shm_segments
from storied.shm.results import Fetched, SharedResults, request_data
from storied.worker import preload, tasklogs, upload
from storied.worker.memory import MemoryManager, sizeof
from storied.worker.state import (
    RUNNING,
    Execute,
    ForgetData,
    GatherDep,
    Instruction,
    Rejoin,
    SendMessage,
    Withdraw,
    WorkerState,
)
from storied.worker.telemetry import ResourceSampler, TransferCounters

logger = logging.getLogger("storied.worker")

_thread_state = threading.local()
_CACHED_PICKLE_LIMIT = 64 * 1024
#: results a client waits for travel with the task-finished message up to this size, which
#: saves the client a round trip to the worker
_INLINE_RESULT_LIMIT = 4 * 1024
#: seconds a same-host reader waits for a result's segments, then gets it over TCP
_SHARE_WAIT = 10.0
_FUNCTION_CACHE_SIZE = 1024


def get_worker() -> Worker:
    """The worker running the current task; ``ValueError`` outside a task."""
    worker = getattr(_thread_state, "worker", None)
    if worker is None:
        raise ValueError(
            "get_worker() was called outside a task: it only works inside a function "
            "running on a storied worker"
        )
    return worker


def task_holds_thread_slot() -> bool:
    """Whether the calling thread runs a task that holds one of its worker's thread slots (it
    has not seceded)."""
    return getattr(_thread_state, "seceded", None) is False and (
        getattr(_thread_state, "key", None) is not None
    )


def _stimulus(prefix: str) -> str:
    return f"{prefix}-{time.time()}"


class _LoggedEvent(NamedTuple):
    """An event waiting in the outbox; a batch of them travels as one message."""

    topics: list[str]
    packed: bytes


class _ShippingRecorder:
    """What WorkerState writes to: this worker's own log, also shipped to a durable scheduler.

    Transitions are shipped in bulk, at most ``SHIP_INTERVAL`` seconds after they were made,
    riding in a frame the worker sends anyway: the scheduler's cost of taking a shipment is
    per message, and a message per task would double the messages it reads. ``ship_now``
    sends what waits with the next frame (the scheduler asks before it tells a story).

    What is shipped is read from the record's own log (``Record.transitions_after``), so a
    transition costs the same shipped or not: the record calls back on the first transition
    after a shipment (which sets the timer) and on every ``SHIP_ROWS``-th after it, or half the
    log if that is less, which takes them out of the log before it overwrites them and ships
    at once. ``transition`` is the record's own append, or a call that keeps nothing.
    """

    SHIP_INTERVAL = 0.05
    SHIP_ROWS = 2_000

    def __init__(self, record: Record) -> None:
        self.record = record
        self._keep = bool(config.get("worker.record-transitions"))
        self._batched: BatchedSend | None = None
        #: transitions recorded (counting from 1) through which they were read from the log
        self._read_through = 0
        #: those read but not shipped yet: (entries, recommendations)
        self._read: list[tuple[list[TransitionEntry], list[dict[str, str]]]] = []
        self._ship_at = 0.0
        self._ship_rows = max(min(self.SHIP_ROWS, record.transitions_kept // 2), 1)
        self.transition: Callable[..., None]
        self._choose_path()

    @property
    def keep(self) -> bool:
        """Whether transitions are recorded at all (``worker.record-transitions``)."""
        return self._keep

    @keep.setter
    def keep(self, keep: bool) -> None:
        self._keep = keep
        self._choose_path()

    def ship_with(self, batched: BatchedSend | None) -> None:
        """Ship with the batches ``batched`` writes from now on; None: keep, but do not ship.

        Shipping starts with what is recorded from then on; a new stream (the worker
        registered again after losing its scheduler) also takes what the last one left
        unshipped, so a reconnection loses none."""
        if batched is None:
            self._read = []
            self.record.call_when_recorded(0, None)
        elif self._batched is None:
            self._read_through = self.record.transitions_recorded
            self._await_first()
        self._batched = batched
        if batched is not None:
            batched.on_flush = self._shipment
            self.ship_now()

    def _choose_path(self) -> None:
        self.transition = self.record.transition if self._keep else NoRecord().transition

    def _unshipped(self) -> bool:
        return bool(self._read) or self.record.transitions_recorded > self._read_through

    def ship_now(self) -> None:
        """Ship what waits with the next frame, which leaves at the end of this burst of work."""
        if self._batched is not None and self._unshipped():
            self._ship_at = 0.0
            self._batched.flush_soon()

    def _await_first(self) -> None:
        self.record.call_when_recorded(self._read_through + 1, self._first_unshipped)

    def _first_unshipped(self) -> None:
        """The first transition since the last shipment: ship within ``SHIP_INTERVAL``."""
        self._ship_at = time.monotonic() + self.SHIP_INTERVAL
        asyncio.get_running_loop().call_later(self.SHIP_INTERVAL, self._flush_due)
        self._await_many()

    def _await_many(self) -> None:
        self.record.call_when_recorded(self._read_through + self._ship_rows, self._read_and_ship)

    def _read_and_ship(self) -> None:
        """Many wait: out of the log with them before it overwrites them, and off."""
        self._read_log()
        self._await_many()
        self.ship_now()

    def _read_log(self) -> None:
        recorded, lost, entries, recommendations = self.record.transitions_after(self._read_through)
        self._read_through = recorded
        if entries:
            self._read.append((entries, recommendations))
        if lost:
            logger.warning(
                "%d transitions fell out of this worker's log (worker.transition-log-length) "
                "before they could be shipped to the scheduler's ledger",
                lost,
            )

    def _flush_due(self) -> None:
        if self._batched is not None and self._unshipped() and time.monotonic() >= self._ship_at:
            self._batched.flush_soon()

    def _shipment(self) -> list[dict[str, Any]]:
        """The message for what is due to be shipped, packed as the ledger block it becomes
        (``storied.record.shipments``): the scheduler stores it without unpacking it."""
        if not self._unshipped() or time.monotonic() < self._ship_at:
            return []
        self._read_log()
        read, self._read = self._read, []
        self._await_first()
        entries = list(itertools.chain.from_iterable(part for part, _ in read))
        if not entries:
            return []
        columns = [list(map(field, entries)) for field in _SHIPPED_FIELDS]
        columns.insert(3, list(itertools.chain.from_iterable(part for _, part in read)))
        return [{"op": "worker-records", "transitions": pack_shipment(columns), "logs": []}]


#: ``SHIPPED_COLUMNS`` but the recommendations, from a transition entry: key, start, finish,
#: stimulus id, timestamp
_SHIPPED_FIELDS = [operator.itemgetter(index) for index in (1, 2, 3, 4, 5)]


class _Executor:
    """Threads that run tasks and hand results back with one loop wake-up per burst.

    ``nthreads`` threads form the pool. A task that secedes (``storied.secede``) keeps its
    thread but leaves the pool: a new thread takes its place, and the seceded thread ends with
    its task instead of coming back for more.
    """

    def __init__(self, worker: Worker, nthreads: int) -> None:
        self._worker = worker
        self._nthreads = nthreads
        #: tasks handed over and not taken by a thread yet (None: a thread is to end); the
        #: loop may withdraw one (``withdraw``)
        self._queue: collections.deque[Execute | None] = collections.deque()
        self._handed = threading.Condition(threading.Lock())
        self._done = Outbox(asyncio.get_running_loop(), self._finished)
        self._indexes = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: seceded tasks waiting in ``rejoin()`` for the state machine to give a slot back
        self._rejoin_events: dict[str, threading.Event] = {}
        self._closed = False
        for _ in range(nthreads):
            self._add_thread()

    def _add_thread(self) -> None:
        index = next(self._indexes)
        thread = threading.Thread(
            target=self._run, args=(index,), name=f"storied-task-{self._worker.name}-{index}"
        )
        thread.daemon = True
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def submit(self, instruction: Execute | None) -> None:
        with self._handed:
            self._queue.append(instruction)
            self._handed.notify()

    def withdraw(self, key: str) -> bool:
        """Take the task ``key`` back if no thread has taken it yet."""
        with self._handed:
            for instruction in self._queue:
                if instruction is not None and instruction.key == key:
                    self._queue.remove(instruction)
                    return True
        return False

    def _next(self) -> Execute | None:
        with self._handed:
            while not self._queue:
                self._handed.wait()
            return self._queue.popleft()

    def _run(self, index: int) -> None:
        _thread_state.worker = self._worker
        _thread_state.seceded = _thread_state.replaced = False
        while True:
            instruction = self._next()
            if instruction is None:
                return
            if instruction.queued:
                # it waited for this thread: its start goes out now (with the outcome just put,
                # in one wake-up of the loop), for the scheduler to blame it, and only it, if
                # the worker dies while it runs
                self._done.put(_Started(instruction.key))
            self._done.put((*self._worker._execute(instruction), index))
            if _thread_state.replaced:
                return  # this thread left the pool; its replacement serves the queue

    def secede_current_thread(self) -> bool:
        """The calling task's thread gives up its slot (the first time, a new thread joins the
        pool in its place); False if it is not in a slot: not a task thread, or seceded."""
        if getattr(_thread_state, "seceded", True):
            return False
        _thread_state.seceded = True
        if not _thread_state.replaced:
            _thread_state.replaced = True
            self._add_thread()
        return True

    def rejoin_current_thread(self, key: str) -> None:
        """Block the seceded task ``key`` until the state machine gives it a slot again."""
        if not getattr(_thread_state, "seceded", False):
            return
        event = threading.Event()
        with self._lock:
            closed = self._closed
            if not closed:
                self._rejoin_events[key] = event
        if not closed:
            self._worker.loop.call_soon_threadsafe(self._worker._rejoin, key)
            event.wait()
        _thread_state.seceded = False

    def rejoined(self, key: str) -> None:
        with self._lock:
            event = self._rejoin_events.pop(key, None)
        if event is not None:
            event.set()

    def release_rejoining(self) -> None:
        """Let every task waiting to rejoin go on (the worker closes or starts afresh)."""
        with self._lock:
            events, self._rejoin_events = self._rejoin_events, {}
        for event in events.values():
            event.set()

    def _finished(self, outcomes: list[tuple[Any, ...]]) -> None:
        for outcome in outcomes:
            if type(outcome) is _Started:
                self._worker._task_started(outcome.key)
            else:
                self._worker._task_done(*outcome)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the threads, giving running tasks ``timeout`` seconds to finish. The wait
        happens in a thread, so the loop goes on meanwhile (a task may need it to end: a
        worker client, a lock, a ``rejoin``); threads still running user code after that are
        left behind, daemons that end with the process."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        self.release_rejoining()
        for _ in range(self._nthreads):
            self.submit(None)
        await asyncio.to_thread(_join_all, threads, timeout)


class _Started(NamedTuple):
    """A task handed to the executor beyond its threads (``Execute.queued``) has a thread."""

    key: str


def _join_all(threads: list[threading.Thread], timeout: float) -> None:
    """Wait for ``threads`` to end, ``timeout`` seconds at most in all."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


class Worker:
    """Runs tasks the scheduler assigns and serves their results to peers and clients."""

    def __init__(
        self,
        scheduler_address: str,
        *,
        nthreads: int = 1,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        security: Security | None = None,
        heartbeat_interval: float | str | None = None,
        resources: str | Mapping[str, float] | None = None,
        nanny: str | None = None,
        insecure: bool = False,
        memory_limit: str | float | None = "auto",
        local_directory: str | None = None,
    ) -> None:
        """``insecure=True`` allows listening beyond loopback without a token or TLS.
        ``memory_limit``: as in Dask, a size (``"4GB"``), a fraction of system memory,
        ``"auto"`` or None/0 for none; results spill to ``local_directory`` past it."""
        self.scheduler_address = scheduler_address
        self.insecure = insecure
        #: the id of the nanny supervising this worker's process, if any
        self.nanny = nanny
        self.nthreads = nthreads
        #: ready tasks handed to the executor beyond its threads (``WorkerState.lookahead``)
        self.executor_lookahead = _lookahead(config.get("worker.executor-lookahead"))
        #: what tasks may claim here (``{"GPU": 2}``); default: config ``worker.resources``
        self.resources = parse_resources(
            resources if resources is not None else config.get("worker.resources"),
            "worker resources",
        )
        self.name = name
        self.host = host
        self.port = port
        self.security = security or Security()
        self.heartbeat_interval = (
            config.parse_timedelta(
                heartbeat_interval
                if heartbeat_interval is not None
                else config.get("worker.heartbeat-interval")
            )
            or 1.0
        )
        #: large results held in shared memory for processes of this host; with a scheduler
        #: on loopback every peer is on this host
        self.shared = SharedResults(
            peers_on_host=is_loopback(parse_address(scheduler_address)[1]),
            on_written=self._shared_written,
            record=partial(self.log_event, "transfer"),
        )
        self.memory = MemoryManager(self, memory_limit, local_directory)
        #: results by key; with a memory limit, a ``SpillBuffer`` that spills them to disk
        self.data: MutableMapping[str, Any] = self.memory.data
        self.memory.on_spill(lambda key, value: self.shared.release([key], reuse=False))
        #: bytes of task data fetched from peers and served to peers and clients
        self.transfers = TransferCounters()
        #: samples resource use for each heartbeat (None: ``worker.telemetry`` is off)
        self.telemetry = ResourceSampler(self) if config.get("worker.telemetry") else None
        self._pickled: dict[str, bytes] = {}
        self._function_payloads: dict[str, bytes] = {}
        self._functions: collections.OrderedDict[str, Callable[..., Any]] = (
            collections.OrderedDict()
        )
        self._functions_lock = threading.Lock()
        self.plugins: dict[str, WorkerPlugin] = {}
        self.plugin_errors = PluginErrors(logger)
        #: tag what tasks log and print with their key (``worker.capture-task-logs``)
        self.capture_task_logs = bool(config.get("worker.capture-task-logs"))
        self.status = "created"
        self.address = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._silence_timeout: float | None = None
        #: whether the scheduler keeps a ledger (then our log records are always shipped)
        self._scheduler_durable = False
        self._gather_queue: collections.defaultdict[str, set[str]] = collections.defaultdict(set)
        #: a transfer from a peer silent this long fails (and the input is fetched elsewhere)
        self._transfer_timeout = config.parse_timedelta(config.get("scheduler.worker-ttl"))
        self._gathering: set[str] = set()
        self.record: Record
        self.state: WorkerState
        self.stream: Stream
        self.loop: asyncio.AbstractEventLoop

    def __repr__(self) -> str:
        return f"<Worker {self.name!r} {self.address} {self.status}>"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Worker:
        self.loop = asyncio.get_running_loop()
        if self.shared.host is not None:
            shm_segments.remove_orphans()
        self._listener = configured_listener(
            f"tcp://{self.host}:{self.port}",
            self._serve_peer,
            self.security,
            insecure=self.insecure,
        )
        await self._listener.start()
        self.address = self._listener.address
        if self.name is None:
            self.name = self.address
        self.record = Record(
            self.address,
            transition_log_length=config.get("worker.transition-log-length"),
            log_length=config.get("worker.log-length"),
            run_in_owner=partial(call_on_loop, self.loop),
        )
        self._log_handler = self.record.log_handler()
        self._outbox = Outbox(self.loop, self._send_outbox)
        self._recorder = _ShippingRecorder(self.record)
        self._log_handler.attach("worker")
        if self.capture_task_logs:
            tasklogs.install()
        self.state = self._new_state()
        self.coordination = WorkerCoordination(self)
        self.pool = ConnectionPool(self.security)
        self.executor = _Executor(self, self.nthreads)
        preload_dask()
        timeout = config.parse_timedelta(config.get("comm.connect-timeout")) or 10.0
        await self._register(timeout)
        self.status = "running"
        self._spawn(self._keep_connected())
        self._spawn(self._heartbeat())
        if self.memory.monitored:
            self._spawn(self.memory.monitor(lambda: self.status == "running"))
        logger.info(
            "Worker %s (%s) at %s, connected to %s, %d threads, resources %s",
            self.name,
            os.getpid(),
            self.address,
            self.scheduler_address,
            self.nthreads,
            self.resources or "none",
        )
        self.shared.announce(self.address)
        return self

    async def _register(self, timeout: float) -> None:
        comm = await connect(self.scheduler_address, self.security, timeout)
        comm.name = "worker->scheduler"
        await comm.send(
            {
                "op": "register-worker",
                "address": self.address,
                "name": self.name,
                "nthreads": self.nthreads,
                "resources": self.resources,
                "pid": os.getpid(),
                "nanny": self.nanny,
                "memory_limit": self.memory.limit,
                "status": "paused" if self.memory.paused else "running",
            }
        )
        reply = await comm.read(timeout)
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            await comm.close()
            raise ConnectionError(f"scheduler refused registration: {reply!r}")
        self.stream = Stream(comm, self._stream_handlers(), "worker stream")
        #: the scheduler's heartbeat contract: silence this long means the link is gone
        self._silence_timeout = reply.get("silence_timeout")
        durable = bool(reply.get("durable"))
        self._recorder.ship_with(self.stream.batched if durable else None)
        self._scheduler_durable = durable
        self._log_handler.on_record = self._outbox.put if durable else None
        for payload in reply.get("plugins", []):
            with contextlib.suppress(Exception):  # logged; this worker runs on without it
                await self._add_plugin(**payload)

    async def _keep_connected(self) -> None:
        """Serve the scheduler stream; if it drops, start afresh and rejoin, or give up."""
        reconnect_timeout = config.parse_timedelta(config.get("comm.reconnect-timeout")) or 0.0
        connect_timeout = config.parse_timedelta(config.get("comm.connect-timeout")) or 10.0
        while True:
            await self.stream.run()
            if self.status != "running":
                return
            reason = self.stream.comm.closed_reason
            logger.warning(
                "Lost connection to scheduler %s: %s; trying to rejoin for %.0fs",
                self.scheduler_address,
                reason,
                reconnect_timeout,
            )
            self._reset()
            try:
                await retry_until(
                    self._register,
                    reconnect_timeout,
                    what=f"rejoin {self.scheduler_address}",
                    logger=logger,
                    attempt_timeout=connect_timeout,
                    keep_trying=lambda: self.status == "running",
                )
            except Exception as exc:
                logger.error("Could not rejoin %s: %s; shutting down", self.scheduler_address, exc)
                # no one is left to take what running tasks make: do not wait for them
                self._spawn(self.close(report=False, reason="scheduler lost", task_wait=0.0))
                return
            logger.info("Worker %s rejoined %s", self.address, self.scheduler_address)

    def _reset(self) -> None:
        """The scheduler has rescheduled our work elsewhere: forget tasks and data."""
        self.state = self._new_state()
        self.executor.release_rejoining()
        self.coordination.forget(list(self.coordination.actors))
        self.data.clear()
        self.shared.release_all()
        self._pickled.clear()
        self._gather_queue.clear()

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.start().__await__()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _heartbeat(self) -> None:
        """Tell the scheduler we live; if it has gone silent, drop the link and rejoin."""
        while self.status == "running":
            await asyncio.sleep(self.heartbeat_interval)
            self._report_plugin_errors()
            if not self.stream.closed:
                msg: dict[str, Any] = {"op": "heartbeat"}
                if self.telemetry is not None and (sample := self.telemetry.sample()):
                    msg["metrics"] = sample
                self.stream.send(msg)
                if self._silence_timeout:
                    self.stream.abort_if_silent(self._silence_timeout)

    async def close(
        self, report: bool = True, reason: str = "worker-close", task_wait: float = 5.0
    ) -> None:
        """``task_wait``: seconds to let running tasks finish (their threads are left behind,
        to end with the process, after that)."""
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        logger.info("Worker %s closing: %s", self.address, reason)
        for name, plugin in list(self.plugins.items()):
            await run_plugin_hook(self.plugin_errors, name, plugin.teardown, self)
        self._report_plugin_errors()
        if report and not self.stream.closed:
            self._recorder.ship_now()
            self.stream.send({"op": "unregister", "reason": reason})
        self._outbox.flush()
        await self.stream.close()
        await self._listener.close()
        await self.pool.close()
        await self.executor.shutdown(task_wait)
        self.memory.close()
        self.shared.close()
        await self.coordination.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        self._log_handler.detach()
        if self.capture_task_logs:
            tasklogs.uninstall()
        self.record.close()
        self.status = "closed"

    async def finished(self) -> None:
        """Wait until the worker has closed (for the CLI)."""
        while self.status != "closed":
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ scheduler stream

    def _stream_handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "compute-task": self._compute_task,
            "heartbeat": lambda: None,
            "free-keys": self._free_keys,
            "preload-modules": self._preload_modules,
            "steal-request": self._steal_request,
            "acquire-replicas": self._acquire_replicas,
            "close": self._close_requested,
            "run": self._run_function,
            "story": self.story_records,
            "ship-records": self._recorder.ship_now,
            "get-logs": self.get_logs,
            "log-entries": self._log_entries,
            "ship-logs": self._ship_logs,
            "add-plugin": self._add_plugin,
            "remove-plugin": self._remove_plugin,
            "upload-file": self.upload_file,
        }

    def _compute_task(
        self,
        key: str,
        function_id: str,
        args: bytes,
        priority: int,
        stimulus_id: str,
        function: bytes | None = None,
        who_has: dict[str, list[str]] | None = None,
        wanted: bool = False,
        resources: dict[str, float] | None = None,
        user_priority: float = 0,
    ) -> None:
        if function is not None:
            self._function_payloads[function_id] = function
        self._handle(
            self.state.compute_task(
                key,
                function_id,
                args,
                priority,
                who_has or {},
                stimulus_id,
                wanted,
                resources,
                user_priority,
            )
        )

    def _free_keys(
        self, keys: list[str], stimulus_id: str, stimulus_ids: list[str] | None = None
    ) -> None:
        self._handle(self.state.free_keys(keys, stimulus_id, stimulus_ids))

    def _preload_modules(self, modules: object) -> None:
        """A client is about to compute a collection of these packages: import them now, while
        no task runs (``storied.worker.preload``)."""
        if not self.state.executing and not self.state.long_running:
            preload.import_now(modules)

    def _steal_request(self, key: str, stimulus_id: str) -> None:
        self._handle(self.state.steal_request(key, stimulus_id))

    def _acquire_replicas(self, who_has: dict[str, list[str]], stimulus_id: str) -> None:
        self._handle(self.state.acquire_replicas(who_has, stimulus_id))

    def _secede(self, key: str) -> None:
        """The task ``key`` called ``secede()`` (on the loop, from the task's thread); the
        scheduler hears of it, so that it counts the slot as free too."""
        self.stream.send({"op": "long-running", "key": key})
        self._handle(self.state.secede(key, _stimulus("secede")))

    def _rejoin(self, key: str) -> None:
        """The seceded task ``key`` called ``rejoin()`` (on the loop, from the task's thread)."""
        self._handle(self.state.rejoin(key, _stimulus("rejoin")))

    def _memory_paused(self, paused: bool) -> None:
        """The memory monitor paused or unpaused this worker."""
        state = self.state
        stimulus_id = _stimulus("pause" if paused else "unpause")
        stream = getattr(self, "stream", None)  # not yet registered: registration says it
        if stream is not None and not stream.closed:
            status = {"op": "worker-status", "status": "paused" if paused else "running"}
            stream.send({**status, "stimulus_id": stimulus_id})
        self._handle(state.pause(stimulus_id) if paused else state.unpause(stimulus_id))

    def _close_requested(self, reason: str = "scheduler-close", report: bool = False) -> None:
        """``report``: unregister with ``reason`` (a retiring worker), so the scheduler
        removes it as having left on purpose."""
        self._spawn(self.close(report=report, reason=reason))

    @property
    def local_directory(self) -> str:
        """This worker's own directory (spilled results, uploaded files), as Dask's."""
        return self.memory.local_directory

    def upload_file(self, filename: str, data: bytes, load: bool = True) -> list[str]:
        """Write a client's file here, put it on ``sys.path`` and import it (see
        ``storied.worker.upload``); the modules imported. Import errors are raised."""
        modules = upload.install(self.local_directory, filename, data, load)
        self.log_event(upload.EVENT_TOPICS, upload.upload_event(filename, len(data), modules))
        return modules

    async def _run_function(self, function: bytes, args: bytes) -> Any:
        func = pickle_loads(function)
        positional, keywords = pickle_loads(args)
        if "dask_worker" in _parameters(func):
            keywords["dask_worker"] = self
        result = func(*positional, **keywords)
        if asyncio.iscoroutine(result):
            result = await result
        return pickle_dumps(result)

    # ------------------------------------------------------------------ instructions

    def _handle(self, instructions: Iterable[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, SendMessage):
                self.stream.send(instruction.msg)
            elif isinstance(instruction, Execute):
                if not instruction.queued:  # a thread is free for it: it starts now
                    self.stream.send({"op": "task-started", "key": instruction.key})
                self.executor.submit(instruction)
            elif isinstance(instruction, GatherDep):
                self._queue_gather(instruction.worker, instruction.keys)
            elif isinstance(instruction, ForgetData):
                for key in instruction.keys:
                    self.data.pop(key, None)
                    self._pickled.pop(key, None)
                self.shared.release(instruction.keys)
                self.coordination.forget(instruction.keys)
            elif isinstance(instruction, Rejoin):
                self.executor.rejoined(instruction.key)
            elif isinstance(instruction, Withdraw):
                self._withdraw(instruction)

    def _withdraw(self, instruction: Withdraw) -> None:
        """Take a task back from the executor, or learn that a thread has it already."""
        key, stimulus_id = instruction.key, instruction.stimulus_id
        if self.executor.withdraw(key):
            self._handle(self.state.execute_withdrawn(key, stimulus_id, instruction.steal))
            return
        instructions = self.state.execute_started(key)
        if instruction.steal:  # it runs here: the steal request hears "executing"
            instructions += self.state.steal_request(key, stimulus_id)
        self._handle(instructions)

    def _function(self, function_id: str) -> Callable[..., Any]:
        with self._functions_lock:
            func = self._functions.get(function_id)
            if func is not None:
                self._functions.move_to_end(function_id)
                return func
        func = pickle_loads(self._function_payloads[function_id])
        with self._functions_lock:
            self._functions[function_id] = func
            if len(self._functions) > _FUNCTION_CACHE_SIZE:
                self._functions.popitem(last=False)
        return func

    def _execute(self, instruction: Execute) -> tuple[Any, ...]:
        """Runs in an executor thread; returns the outcome for ``_task_done``."""
        key = instruction.key
        start = time.time()
        try:
            func = self._function(instruction.function_id)
            if instruction.has_inputs:
                args, kwargs = loads_with_refs(instruction.args, self.data)
            else:
                args, kwargs = pickle_loads(instruction.args)
            _thread_state.key = key
            with (
                tasklogs.task_logs(self._log_handler, key)
                if self.capture_task_logs
                else contextlib.nullcontext()
            ):
                result = func(*args, **kwargs)
        except BaseException as exc:
            return (key, False, _error_payload(exc), start, time.time(), 0, None)
        finally:
            _thread_state.key = None
        stop = time.time()
        size = sizeof(result)
        return (key, True, result, start, stop, size, _small_pickle(result, size, instruction))

    def _task_started(self, key: str) -> None:
        """A task that waited in the executor for a thread (``Execute.queued``) started."""
        self._handle(self.state.execute_started(key))

    def _task_done(
        self,
        key: str,
        ok: bool,
        value: Any,
        start: float,
        stop: float,
        size: int,
        pickled: bytes | Pickled | None,
        thread: int,
    ) -> None:
        ts = self.state.tasks.get(key)
        if ts is None or ts.state not in RUNNING:
            self.shared.release([key])
            return  # forgotten meanwhile (the worker rejoined the scheduler afresh)
        if ok:
            self.data[key] = value
            if pickled is not None:
                self._cache_pickle(key, pickled)
            inline = pickled if ts.wanted else None
            instructions = self.state.execute_success(
                key,
                size,
                typename(value),
                start,
                stop,
                _stimulus("task-finished"),
                thread,
                inline,
            )
        else:
            logger.warning("Compute failed: key=%s %s", key, value["text"])
            instructions = self.state.execute_failure(
                key, value, start, stop, _stimulus("task-erred"), thread
            )
        self._handle(instructions)

    def _queue_gather(self, worker: str, keys: Iterable[str]) -> None:
        """One transfer in flight per peer; keys asked for meanwhile go in the next one."""
        self._gather_queue[worker].update(keys)
        if worker not in self._gathering:
            self._gathering.add(worker)
            self._spawn(self._gather_from(worker))

    async def _gather_from(self, worker: str) -> None:
        try:
            while self._gather_queue.get(worker):
                keys = list(self._gather_queue.pop(worker))
                await self._gather(worker, keys)
        finally:
            self._gathering.discard(worker)

    async def _gather(self, worker: str, keys: list[str]) -> None:
        try:
            fetched = await request_data(self.pool, worker, keys, self._transfer_timeout)
        except (OSError, TimeoutError) as exc:  # a frozen peer must not hold its inputs forever
            logger.info("Could not fetch %d keys from %s: %s", len(keys), worker, exc)
            self.pool.remove(worker)
            fetched = Fetched({}, {})
        payloads, unsendable = fetched.data, fetched.errors
        self._count_fetched(worker, fetched)
        received = []
        unreadable: dict[str, dict[str, Any]] = {}
        for key, text in unsendable.items():
            # its holder could not pickle it: fetching it again would fail the same way
            if key in keys:
                error = TypeError(f"the result of {key!r} could not be sent from {worker}: {text}")
                unreadable[key] = self._transfer_failed("send-failed", key, worker, error)
        for key, payload in payloads.items():
            ts = self.state.tasks.get(key)
            if ts is not None and ts.state == "flight":
                try:
                    self.data[key] = pickle_loads(payload)
                except Exception as exc:
                    unreadable[key] = self._transfer_failed("unpickle-failed", key, worker, exc)
                    continue
                received.append(key)
        instructions = self.state.gather_success(worker, received, _stimulus("gather-dep-success"))
        for key, error in unreadable.items():
            instructions += self.state.gather_error(key, error, _stimulus("gather-dep-error"))
        missing = [k for k in keys if k not in payloads and k not in unreadable]
        if missing:
            instructions += self.state.gather_failure(
                worker, missing, _stimulus("gather-dep-failure")
            )
        self._handle(instructions)

    def _count_fetched(self, worker: str, fetched: Fetched) -> None:
        """Count the bytes fetched by each path; a large transfer goes on the record as a
        ``transfer`` event saying which (``shm`` or ``tcp``, and what fell back to TCP)."""
        through_shm = set(fetched.shm)
        shm = sum(nbytes(fetched.data[key]) for key in through_shm)
        total = sum(map(nbytes, fetched.data.values()))
        self.transfers.incoming_bytes += total
        self.transfers.shared_incoming_bytes += shm
        for path, size, keys in (
            ("shm", shm, fetched.shm),
            ("tcp", total - shm, [key for key in fetched.data if key not in through_shm]),
        ):
            if keys and size >= self.shared.threshold:
                msg = {"action": "fetched", "path": path, "from": worker, "keys": keys}
                if path == "tcp" and fetched.fallback:
                    msg["fallback"] = fetched.fallback
                self.log_event("transfer", {**msg, "nbytes": size})

    def _transfer_failed(
        self, action: str, key: str, worker: str, exc: BaseException
    ) -> dict[str, Any]:
        """Log and put on the record (topic ``transfer``) that ``key`` could not be had from
        ``worker``; the error payload the tasks waiting for it fail with."""
        logger.warning("Could not fetch %s from %s (%s): %r", key, worker, action, exc)
        error = _error_payload(exc)
        self.log_event(
            "transfer",
            {"action": action, "key": key, "from": worker, "exception": error["text"]},
        )
        return error

    # ------------------------------------------------------------------ peers

    async def _serve_peer(self, comm: Comm) -> None:
        while True:
            msg = await comm.read()
            if not isinstance(msg, dict):
                logger.warning("Closing connection from %s: malformed request", comm.peer_address)
                return
            op = msg.get("op")
            keys, data = msg.get("keys"), msg.get("data")
            if op == "get_data" and isinstance(keys, list):
                same_host = self.shared.same_host(msg.get("host"))
                if same_host:
                    await self._share(keys)
                comm.write(self._get_data(keys, same_host))
            elif op == "update_data" and isinstance(data, dict):
                comm.write(self._update_data(data))
            elif op in ACTOR_OPS:
                comm.write(await self.coordination.handle(msg))
            else:
                logger.warning(
                    "Closing connection from %s: unknown or malformed request %r",
                    comm.peer_address,
                    op,
                )
                return

    async def _share(self, keys: list[Any]) -> None:
        """Before a reader of this host gets ``keys``: the large ones held in memory (not
        spilled) put in shared memory, if no reader had them put there yet (results are
        written lazily: one that never moves costs no copy)."""
        in_memory = self.memory.in_memory
        values = {
            key: value
            for key in keys
            if isinstance(key, str)
            and (value := in_memory.get(key)) is not None
            and self.shared.wants(sizeof(value))
        }
        if values:
            await self.shared.ready(values, _SHARE_WAIT)

    def _shared_written(self, key: str, private: Any, shared: Any) -> None:
        """(Any thread) ``key``'s result is in its segments now: hold it there (see
        ``_hold_shared``)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to hold
            self.loop.call_soon_threadsafe(self._hold_shared, key, private, shared)

    def _hold_shared(self, key: str, private: Any, shared: Any) -> None:
        """Hold ``key``'s result as views of its segments instead of its private copy, which
        is freed then (unless a running task holds it); not if the key was released, spilled
        or made again meanwhile."""
        if self.memory.in_memory.get(key) is private:
            self.data[key] = shared

    def _cache_pickle(self, key: str, pickled: bytes | Pickled) -> None:
        """Keep small pickles for the next reader; large data is held once, as the value (a
        large value pickles again cheaply: its buffers go out of band, uncopied)."""
        if type(pickled) is bytes and len(pickled) <= _CACHED_PICKLE_LIMIT:
            self._pickled[key] = pickled

    def _get_data(self, keys: list[str], same_host: bool = False) -> dict[str, Any]:
        """The pickles of ``keys`` held here; for a requester on this host, the shared-memory
        segments of those that have them instead (under ``shared``)."""
        data: dict[str, bytes | Pickled] = {}
        shared: dict[str, list[Any]] = {}
        errors: dict[str, str] = {}
        for key in keys:
            if not isinstance(key, str) or key not in self.data:
                continue
            if same_host and (handover := self.shared.handover(key)) is not None:
                shared[key] = handover
                continue
            payload = self._pickled.get(key)
            if payload is None:
                try:
                    payload = dumps_data(self.data[key])
                except TypeError as exc:
                    errors[key] = str(exc)
                    continue
                self._cache_pickle(key, payload)
            data[key] = payload
        self.transfers.outgoing_bytes += sum(map(nbytes, data.values()))
        if not shared:
            return {"status": "OK", "data": data, "errors": errors}
        handed = sum(size for _, held in shared.values() for _, _, size in held)
        self.transfers.outgoing_bytes += handed
        self.transfers.shared_outgoing_bytes += handed
        return {"status": "OK", "data": data, "shared": shared, "errors": errors}

    def _update_data(self, data: dict[str, bytes | Pickled]) -> dict[str, Any]:
        """Scattered data arriving from a client."""
        sizes, types = {}, {}
        for key, payload in data.items():
            value = pickle_loads(payload)
            self.data[key] = value
            self._cache_pickle(key, payload)
            sizes[key], types[key] = nbytes(payload), typename(value)
            self.state.tasks.setdefault(key, _scattered_task(key))
        return {"status": "OK", "nbytes": sizes, "types": types}

    # ------------------------------------------------------------------ the record

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log a structured event to the scheduler's ledger; never blocks the calling task."""
        self._outbox.put(_LoggedEvent(*pack_event(topic, msg)))

    def _send_outbox(self, items: list[Any]) -> None:
        """Events, and with a durable scheduler our logs, in one batch."""
        msgs = []
        events = []
        logs = []
        for item in items:
            if isinstance(item, _LoggedEvent):
                events.append(item)
            elif isinstance(item, LogRecordEntry):
                logs.append(
                    [item.timestamp, item.level, item.levelno, item.logger, item.message, item.key]
                )
        if events:
            msgs.append({"op": "log-events", "events": events})
        if logs:
            msgs.append({"op": "worker-records", "transitions": [], "logs": logs})
        if not self.stream.closed:
            self.stream.extend(msgs)

    def get_current_task(self) -> str | None:
        """The key of the task running on the calling thread, as in Dask; None elsewhere."""
        return getattr(_thread_state, "key", None)

    def story(self, *keys_or_stimulus_ids: str) -> list[tuple[Any, ...]]:
        """This worker's transitions for these keys: (key, start, finish, recs, stimulus, time).

        Safe from a task's thread too (``get_worker().story(...)``): the record reads on the loop.
        """
        return [
            (r.key, r.start, r.finish, r.recommendations, r.stimulus_id, r.timestamp)
            for r in self.record.story_records(*keys_or_stimulus_ids)
        ]

    def story_records(self, keys: list[str]) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.record.story_records(*keys)]

    def _log_entries(self, n: int | None = None, keys: list[str] | None = None) -> list[list[Any]]:
        """The newest ``n`` captured records (all: None), or only what tasks ``keys`` logged."""
        entries = self.record.log_handler().entries()[-(n or 0) :]
        wanted = None if keys is None else set(keys)
        return [e.as_list() for e in entries if wanted is None or e.key in wanted]

    def _ship_logs(self, ship: bool) -> None:
        """Ship our log records to the scheduler as they are captured while a dashboard tails
        them (``ship``), as always to a durable scheduler, which keeps them in its ledger."""
        shipping = ship or self._scheduler_durable
        self._log_handler.on_record = self._outbox.put if shipping else None

    def get_logs(self, n: int | None = None) -> list[tuple[str, str]]:
        return self.record.logs(n)

    # ------------------------------------------------------------------ plugins

    async def _add_plugin(self, plugin: bytes, name: str) -> None:
        instance: WorkerPlugin = pickle_loads(plugin)
        if name in self.plugins:
            await self._remove_plugin(name)
        try:
            await run_setup_hook(instance.setup, self)
        except Exception:
            logger.exception("Worker plugin %r not added: its setup() failed", name)
            raise
        self.plugins[name] = instance
        self.state.on_transition = self._plugin_transition

    async def _remove_plugin(self, name: str) -> None:
        plugin = self.plugins.pop(name, None)
        if not self.plugins:
            self.state.on_transition = None
        if plugin is not None:
            await run_plugin_hook(self.plugin_errors, name, plugin.teardown, self)

    def _report_plugin_errors(self) -> None:
        """Plugin hook failures since the last report, as ``plugin-errors`` events."""
        for message in self.plugin_errors.summary():
            self.log_event(PLUGIN_ERRORS_TOPIC, {**message, "worker": self.address})

    def _new_state(self) -> WorkerState:
        """The state machine calls out to plugins only while there are any."""
        hook = self._plugin_transition if self.plugins else None
        state = WorkerState(
            self.nthreads, self._recorder, hook, self.resources, self.executor_lookahead
        )
        state.paused = self.memory.paused
        return state

    def _plugin_transition(self, key: str, start: str, finish: str, stimulus_id: str) -> None:
        for name, plugin in self.plugins.items():
            hook = plugin.transition
            awaitable = call_plugin_hook(
                self.plugin_errors, name, hook, key, start, finish, stimulus_id=stimulus_id
            )
            if awaitable is not None:
                self._spawn(finish_plugin_hook(self.plugin_errors, name, hook, awaitable))


def _lookahead(value: Any) -> int:
    """``worker.executor-lookahead``, checked: a count of tasks."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"worker.executor-lookahead must be a whole number of tasks, 0 or more, not {value!r}"
        )
    return value


def _parameters(func: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()


def _scattered_task(key: str) -> Any:
    from storied.worker.state import WorkerTask

    return WorkerTask(key, state="memory", assigned=True)


def _small_pickle(value: Any, size: int, instruction: Execute) -> bytes | Pickled | None:
    """The result of a task a client waits for, pickled if small enough (``size``, by
    ``sizeof``) to travel with the task-finished message. Only such results are pickled as they
    are made; the rest are pickled when a peer or client fetches them, and one that cannot be
    pickled fails there (as in Dask), not here."""
    if not instruction.wanted or size > _INLINE_RESULT_LIMIT:
        return None
    try:
        pickled = dumps_data(value)
    except TypeError:
        return None
    return pickled if nbytes(pickled) <= _INLINE_RESULT_LIMIT else None


def _error_payload(exc: BaseException) -> dict[str, Any]:
    """What the scheduler and client need to re-raise ``exc`` with its remote traceback."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        payload = pickle_dumps(exc)
        pickle_loads(payload)
    except Exception:
        payload = pickle_dumps(RuntimeError(text))
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # skip storied's own frame
    try:
        tb_dict = tblib.Traceback(tb).as_dict() if tb is not None else None
    except Exception:
        tb_dict = None
    return {
        "exception": payload,
        "traceback": tb_dict,
        "text": text,
        # from the same frame as the traceback the client rebuilds: the user's code, not ours
        "traceback_text": "".join(traceback.format_exception(type(exc), exc, tb)),
    }
