"""The scheduler's task state machine: stimuli in, transitions and messages out.

Nothing here touches sockets, asyncio or clocks other than through what it is given, so the
whole lifecycle of a task is unit-tested by calling these methods and reading ``Effects``.
Every transition is written to the record through ``Recorder.transition`` with the stimulus
that caused it, which is how ``story`` can say *why*.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from storied.exceptions import FutureLostError, KilledWorker
from storied.protocol.serialize import pickle_dumps
from storied.resources import Resources, check_resources, suffices
from storied.scheduler import placement, safeguard
from storied.scheduler.lag import ReportLag

logger = logging.getLogger("storied.scheduler")

Recommendations = dict[str, str]
#: the stand-in client that wants fire-and-forget tasks until they are done
FIRE_AND_FORGET = "fire-and-forget"

#: States a task can be in on the scheduler.
#: ``queued``: runnable, waiting on the scheduler for a free thread slot on any worker.
STATES = (
    "released",
    "waiting",
    "no-worker",
    "queued",
    "processing",
    "memory",
    "erred",
    "forgotten",
)

#: A worker's statuses, as Dask's: only ``running`` workers are sent new tasks.
WORKER_STATUSES = ("running", "paused", "closing_gracefully")

#: A task's ``priority`` is ``generation * GENERATION_SPAN + its index within its submit/map
#: call``: older generations first, then call order; the user's priority comes before both.
GENERATION_SPAN = 2**32
#: graphs this close together (seconds) share a generation unless the client says otherwise
DEFAULT_FIFO_TIMEOUT = 0.1


class Recorder(Protocol):
    """The narrow interface through which the state machine writes history."""

    def transition(
        self,
        key: str,
        start: str,
        finish: str,
        recommendations: Mapping[str, str],
        stimulus_id: str,
        worker: str | None = None,
    ) -> None: ...


class _NoLinks(frozenset):  # type: ignore[type-arg]
    """The empty link set shared by every task without dependencies (an empty set costs 216
    bytes, and most tasks have none). Adding to it means replacing it with a real set."""

    __slots__ = ()

    def discard(self, item: object) -> None:
        pass

    def clear(self) -> None:
        pass


NO_LINKS: Any = _NoLinks()


class TaskState:
    """One task as the scheduler sees it. A hand-written class: one is made per task."""

    __slots__ = (
        "args", "dependencies", "dependents", "erred_on", "error", "failed_attempts",
        "function_id", "key", "lineage",
        "loose", "nbytes", "priority", "processing_on", "resources", "restrictions", "retries",
        "started", "state", "suspicious", "type", "user_priority", "waiters", "waiting_on",
        "who_has", "who_wants",
    )  # fmt: skip

    def __init__(
        self, key: str, function_id: str | None, args: bytes | None, priority: int
    ) -> None:
        self.key = key
        self.function_id = function_id
        self.args = args
        self.priority = priority
        self.state = "released"
        self.dependencies: set[TaskState] = NO_LINKS
        self.dependents: set[TaskState] = NO_LINKS
        #: dependencies not yet in memory
        self.waiting_on: set[TaskState] = NO_LINKS
        #: dependents that still need this task's result
        self.waiters: set[TaskState] = NO_LINKS
        self.who_wants: set[str] = set()
        self.who_has: set[str] = set()
        self.processing_on: str | None = None
        #: its worker said it began executing it (only such tasks are blamed for a death)
        self.started = False
        self.retries = 0
        self.suspicious = 0
        self.restrictions: frozenset[str] | None = None
        #: the restrictions are preferences: any worker will do when none of them can
        self.loose = False
        #: what the task claims on its worker while it runs
        self.resources: Resources | None = None
        #: higher runs first (``submit(priority=)``); ``priority`` orders ties
        self.user_priority: float = 0
        self.nbytes = 0
        #: seconds of compute to rebuild its result from nothing (``safeguard``)
        self.lineage = 0.0
        self.type: str | None = None
        self.error: dict[str, Any] | None = None
        self.erred_on: str | None = None
        #: runs that raised, retries included: the attempt number the record gives a failure
        self.failed_attempts = 0

    def __repr__(self) -> str:
        return f"<TaskState {self.key!r} {self.state}>"


@dataclass(eq=False, slots=True)
class WorkerInfo:
    address: str
    name: str
    nthreads: int
    resources: Resources = field(default_factory=dict)
    processing: set[TaskState] = field(default_factory=set)
    #: processing tasks that seceded from its thread pool: they hold no slot
    long_running: set[TaskState] = field(default_factory=set)
    has_what: set[TaskState] = field(default_factory=set)
    known_functions: set[str] = field(default_factory=set)
    #: as Dask's: only a ``running`` worker is sent new tasks (``paused``: short of memory;
    #: ``closing_gracefully``: retiring)
    status: str = "running"

    @property
    def occupancy(self) -> float:
        return len(self.processing) / self.nthreads

    def free_slots(self, slots: float) -> float:
        """How many more tasks it should be sent now, when it may hold ``slots`` at once."""
        return slots - len(self.processing) + len(self.long_running)

    def identity(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "nthreads": self.nthreads,
            "resources": dict(self.resources),
            "processing": len(self.processing),
            "in_memory": len(self.has_what),
        }


class Effects:
    """Messages a stimulus produced, by recipient, and ``(topic, msg)`` events it put on the
    record; the server shell sends the messages and logs the events."""

    __slots__ = ("clients", "events", "workers")

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.workers: collections.defaultdict[str, list[dict[str, Any]]] = collections.defaultdict(
            list
        )
        self.clients: collections.defaultdict[str, list[dict[str, Any]]] = collections.defaultdict(
            list
        )


class TaskSpec(NamedTuple):
    """One task as a client submits it (a tuple: built for every task, so it must be cheap)."""

    key: str
    function_id: str
    args: bytes
    dependencies: Sequence[str] = ()
    retries: int = 0
    restrictions: Sequence[str] | None = None
    #: None, or any of ``priority`` (number: higher runs first), ``resources`` (name -> amount
    #: claimed while running) and ``loose`` (bool: the restrictions are only preferences)
    options: Mapping[str, Any] | None = None


TransitionHook = Callable[[str, str, str, str, dict[str, Any]], None]


class SchedulerState:
    """All tasks, workers and clients the scheduler knows, and how tasks move between states."""

    def __init__(
        self,
        recorder: Recorder,
        allowed_failures: int = 3,
        on_transition: TransitionHook | None = None,
        worker_saturation: float = math.inf,
        worker_backlog: float = 0.0,
        safeguard_lineage: float = math.inf,
    ) -> None:
        """``worker_saturation``: a worker is sent at most this many tasks per thread at once
        (at least one); tasks without inputs or restrictions beyond that wait ``queued`` here,
        so whichever worker frees a slot (a new one too) takes the next. ``inf``: send all.
        ``worker_backlog``: seconds; a thread is also sent as many tasks as it runs in that
        time (by the recent average duration), so short tasks do not each wait for a round
        trip to the scheduler, stretched to twice the longest recent delay in hearing of
        finished tasks (``storied.scheduler.lag``). 0: exactly Dask's limit.
        ``safeguard_lineage``: seconds; an awaited result that would take this much compute to
        rebuild gets a second copy on another worker (``storied.scheduler.safeguard``;
        ``inf``: never, as Dask)."""
        if not worker_saturation > 0:
            raise ValueError(
                f"worker_saturation must be a number above 0 (or inf), not {worker_saturation!r}"
            )
        if not worker_backlog >= 0:
            raise ValueError(f"worker_backlog must be seconds >= 0, not {worker_backlog!r}")
        self.record = recorder
        self.allowed_failures = allowed_failures
        self.worker_saturation = worker_saturation
        self.worker_backlog = worker_backlog
        self.safeguard_lineage = safeguard_lineage
        #: seconds of compute every finished task took, added up (caps a result's lineage)
        self.compute_seconds = 0.0
        #: moving average of how long tasks run (seconds; None until one has finished), and
        #: the same per function (work stealing weighs a task by its function's)
        self.task_duration: float | None = None
        self.function_durations: dict[str, float] = {}
        #: how far behind the workers' reports this state runs (``task_finished``'s ``now``)
        self.report_lag = ReportLag()
        #: queued tasks, and a heap of (-user priority, priority, arrival, key) of them (stale
        #: entries are skipped): ties, such as separate submits in one generation, go by arrival
        self.queued: set[TaskState] = set()
        self._queue: list[tuple[float, int, int, str]] = []
        self._arrival = itertools.count()
        #: workers whose processing shrank during the current stimulus: queued tasks may go there
        self._slots_opened: set[WorkerInfo] = set()
        self.on_transition = on_transition
        #: called with each key that leaves ``processing`` (work stealing drops a steal whose
        #: task left its victim: the victim's answer is then about an assignment that is over)
        self.on_leaving_processing: Callable[[str], None] | None = None
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerInfo] = {}
        #: the workers that may be sent new tasks (status ``running``)
        self.running: dict[str, WorkerInfo] = {}
        self.clients: set[str] = set()
        self.functions: dict[str, bytes] = {}
        self._function_users: collections.Counter[str] = collections.Counter()
        self.unrunnable: set[TaskState] = set()
        #: why each unrunnable task has no worker (key -> reason), for whoever asks
        self.no_worker_reasons: dict[str, str] = {}
        self._generation = 0
        self._generation_start = -math.inf
        self._table: dict[tuple[str, str], Callable[..., Recommendations]] = {
            ("released", "waiting"): self._released_waiting,
            ("released", "forgotten"): self._released_forgotten,
            ("released", "erred"): self._waiting_erred,
            ("waiting", "processing"): self._waiting_processing,
            ("waiting", "no-worker"): self._waiting_no_worker,
            ("waiting", "released"): self._waiting_released,
            ("waiting", "erred"): self._waiting_erred,
            ("no-worker", "processing"): self._waiting_processing,
            ("queued", "processing"): self._queued_processing,
            ("no-worker", "released"): self._waiting_released,
            ("no-worker", "erred"): self._waiting_erred,
            ("queued", "released"): self._queued_released,
            ("processing", "memory"): self._processing_memory,
            ("processing", "erred"): self._processing_erred,
            ("processing", "released"): self._processing_released,
            ("memory", "released"): self._memory_released,
            ("erred", "released"): self._erred_released,
        }

    # ------------------------------------------------------------------ stimuli

    def update_graph(
        self,
        client: str,
        tasks: Iterable[TaskSpec],
        functions: Mapping[str, bytes],
        wanted: Iterable[str],
        stimulus_id: str,
        *,
        now: float | None = None,
        fifo_timeout: float = 0.0,
        calls: Sequence[int] | None = None,
    ) -> Effects:
        """A client submitted tasks (new ones are created; known keys are just wanted again).

        Priorities follow Dask: a graph arriving within ``fifo_timeout`` seconds of the start of
        the current generation joins it (``now`` None: always a new one), and within a
        generation a task ranks by its index in its submit/map call; ``calls`` gives how many
        tasks each call contributed, in order (None: all are one call).

        Raises ``ValueError``, changing nothing, if a task names a function not sent along or
        has malformed options.
        """
        tasks = list(tasks)
        for spec in tasks:
            if spec.function_id not in functions and spec.function_id not in self.functions:
                raise ValueError(f"task {spec.key!r} names unknown function {spec.function_id!r}")
            if spec.options is not None:
                _check_options(spec.key, spec.options)
        if isinstance(fifo_timeout, bool) or not isinstance(fifo_timeout, int | float):
            raise ValueError(f"fifo_timeout must be a number of seconds, not {fifo_timeout!r}")
        if calls is not None and (
            not all(type(n) is int and n >= 0 for n in calls) or sum(calls) != len(tasks)
        ):
            raise ValueError(f"calls {calls!r} must be counts adding up to {len(tasks)} tasks")
        effects = Effects()
        for function_id, payload in functions.items():
            self.functions.setdefault(function_id, payload)
        base = self._next_generation(now, fifo_timeout) * GENERATION_SPAN
        priorities: Iterable[int] = (
            range(base, base + len(tasks))
            if calls is None
            else (base + i for i in itertools.chain.from_iterable(map(range, calls)))
        )
        recommendations: list[tuple[str, str]] = []
        for spec, priority in zip(tasks, priorities):  # noqa: B905 (calls add up: checked)
            ts = self.tasks.get(spec.key)
            if ts is not None and ts.function_id is not None:
                continue
            if ts is None:
                ts = self.tasks[spec.key] = TaskState(
                    spec.key, spec.function_id, spec.args, priority
                )
            else:
                ts.function_id, ts.args, ts.priority = spec.function_id, spec.args, priority
            self._function_users[spec.function_id] += 1
            ts.retries = spec.retries
            ts.restrictions = frozenset(spec.restrictions) if spec.restrictions else None
            if spec.options is not None:
                options = spec.options
                ts.user_priority = options.get("priority", 0)
                ts.resources = options.get("resources") or None
                ts.loose = bool(options.get("loose"))
            for dep_key in spec.dependencies:
                dep = self.tasks.get(dep_key)
                if dep is None:
                    dep = self.tasks[dep_key] = TaskState(dep_key, None, None, priority)
                if ts.dependencies is NO_LINKS:
                    ts.dependencies = set()
                ts.dependencies.add(dep)
                if dep.dependents is NO_LINKS:
                    dep.dependents = set()
                dep.dependents.add(ts)
            if ts.state == "released":
                recommendations.append((ts.key, "waiting"))
        for key in wanted:
            self._desire(client, key, effects)
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def update_data(
        self,
        client: str,
        who_has: Mapping[str, Iterable[str]],
        nbytes: Mapping[str, int],
        types: Mapping[str, str],
        stimulus_id: str,
    ) -> Effects:
        """A client scattered data straight to workers; the tasks start in memory."""
        effects = Effects()
        for key, addresses in who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                priority = self._generation * GENERATION_SPAN
                ts = self.tasks[key] = TaskState(key, None, None, priority)
            start = ts.state
            for address in addresses:
                ws = self.workers.get(address)
                if ws is not None:
                    ts.who_has.add(address)
                    ws.has_what.add(ts)
            ts.nbytes, ts.type = nbytes.get(key, 0), types.get(key)
            if ts.who_has and start != "memory":
                ts.state = "memory"
                self.record.transition(
                    ts.key, start, "memory", {}, stimulus_id, next(iter(ts.who_has))
                )
            self._desire(client, key, effects)
        return effects

    def _next_generation(self, now: float | None, fifo_timeout: float) -> int:
        """The generation of a graph arriving ``now`` (older generations run first)."""
        if now is None or self._generation_start + fifo_timeout < now:
            self._generation += 1
            self._generation_start = -math.inf if now is None else now
        return self._generation

    def add_worker(
        self,
        address: str,
        name: str,
        nthreads: int,
        stimulus_id: str,
        resources: Mapping[str, float] | None = None,
        status: str = "running",
    ) -> Effects:
        """A worker joined (with ``resources`` to lend its tasks); unrunnable tasks try it. A
        worker joining ``paused`` (it rejoined short of memory) waits for its word to run."""
        effects = Effects()
        ws = self.workers[address] = WorkerInfo(
            address, name, max(1, nthreads), dict(resources or {})
        )
        if status != "running":
            return self.set_worker_status(address, status, stimulus_id)
        self.running[address] = ws
        self._slots_opened.add(ws)
        recommendations = [(ts.key, "processing") for ts in self.unrunnable]
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def set_worker_status(self, address: str, status: str, stimulus_id: str) -> Effects:
        """A worker paused, resumed or began retiring: only ``running`` workers get new tasks
        (those it holds stay; work stealing may move the ones not started)."""
        if status not in WORKER_STATUSES:
            raise ValueError(f"worker status must be one of {WORKER_STATUSES}, not {status!r}")
        effects = Effects()
        ws = self.workers.get(address)
        if ws is None or ws.status == status:
            return effects
        ws.status = status
        if status != "running":
            self.running.pop(address, None)
            return effects
        self.running[address] = ws
        self._slots_opened.add(ws)
        recommendations = [(ts.key, "processing") for ts in self.unrunnable]
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def steal_task(self, key: str, victim: str, thief: str, stimulus_id: str) -> Effects:
        """``victim`` gave ``key`` back before starting it (work stealing): ``thief`` computes
        it instead. The story shows the move as processing -> processing on ``thief``."""
        effects = Effects()
        ts = self.tasks[key]
        old, new = self.workers[victim], self.workers[thief]
        old.processing.discard(ts)
        self._slots_opened.add(old)
        self._assign(ts, new, stimulus_id, effects)
        self.record.transition(key, "processing", "processing", {}, stimulus_id, thief)
        self._transitions((), stimulus_id, effects)
        return effects

    def remove_worker(self, address: str, stimulus_id: str, *, expected: bool) -> Effects:
        """A worker left (``expected``) or died; reschedule its work and recompute lost data."""
        effects = Effects()
        ws = self.workers.pop(address, None)
        if ws is None:
            return effects
        self.running.pop(address, None)
        self._slots_opened.discard(ws)
        self.report_lag.forget(address)
        recommendations: list[tuple[str, str]] = []
        running = _believed_running(ws) if not expected else set()
        for ts in sorted(ws.processing, key=_rank):
            if ts in running:
                ts.suspicious += 1
                if ts.suspicious > self.allowed_failures:
                    ts.error = _error_payload(KilledWorker(ts.key, address, self.allowed_failures))
                    recommendations.append((ts.key, "erred"))
                    continue
            recommendations.append((ts.key, "released"))
        for ts in ws.has_what:
            ts.who_has.discard(address)
            if not ts.who_has:
                recommendations.append((ts.key, "released"))
        ws.processing.clear()
        ws.long_running.clear()
        ws.has_what.clear()
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def lost_tasks(self, address: str) -> dict[str, list[str]]:
        """What goes if a worker goes now, as Dask's ``remove-worker`` event splits it: the
        ``processing-tasks`` it runs, the ``lost-computed-tasks`` it alone holds (to compute
        again) and the ``lost-scattered-tasks`` it alone holds (data no task can rebuild)."""
        ws = self.workers.get(address)
        lost: dict[str, list[str]] = {
            "processing-tasks": [],
            "lost-computed-tasks": [],
            "lost-scattered-tasks": [],
        }
        if ws is None:
            return lost
        lost["processing-tasks"] = [ts.key for ts in ws.processing]
        for ts in ws.has_what:
            if ts.who_has == {address}:
                kind = "lost-computed-tasks" if ts.function_id else "lost-scattered-tasks"
                lost[kind].append(ts.key)
        return lost

    def task_finished(
        self,
        worker: str,
        key: str,
        nbytes: int,
        type_name: str | None,
        stimulus_id: str,
        startstops: tuple[float, float] | None = None,
        data: bytes | None = None,
        now: float | None = None,
    ) -> Effects:
        """``data``: a small result's pickled bytes, passed on to the clients that want it;
        ``now``: when this report is handled (the clock ``startstops`` was read from on the
        scheduler's side), so the backlog can cover how late reports come."""
        effects = Effects()
        ts = self.tasks.get(key)
        if startstops is not None:
            self._note_duration(startstops[1] - startstops[0], ts)
            if now is not None:
                self.report_lag.note(worker, startstops[1], now)
        if ts is None or ts.state != "processing" or ts.processing_on != worker:
            if ts is not None and ts.state == "memory" and worker in self.workers:
                ts.who_has.add(worker)
                self.workers[worker].has_what.add(ts)
            elif worker in self.workers:
                effects.workers[worker].append(
                    {"op": "free-keys", "keys": [key], "stimulus_id": stimulus_id}
                )
            return effects
        recommendations = self._transition(
            ts,
            "memory",
            stimulus_id,
            effects,
            worker=worker,
            nbytes=nbytes,
            type_name=type_name,
            startstops=startstops,
            data=data,
        )
        self._transitions(recommendations.items(), stimulus_id, effects)
        return effects

    def task_erred(
        self,
        worker: str,
        key: str,
        error: dict[str, Any],
        stimulus_id: str,
        startstops: tuple[float, float] | None = None,
    ) -> Effects:
        effects = Effects()
        ts = self.tasks.get(key)
        if ts is None or ts.state != "processing" or ts.processing_on != worker:
            return effects
        ts.failed_attempts += 1
        if ts.retries > 0:
            ts.retries -= 1
            self._transitions([(key, "released")], stimulus_id, effects)
            return effects
        ts.error = error
        recommendations = self._transition(
            ts, "erred", stimulus_id, effects, worker=worker, startstops=startstops
        )
        self._transitions(recommendations.items(), stimulus_id, effects)
        return effects

    def _note_duration(self, duration: float, ts: TaskState | None) -> None:
        self.task_duration = _moving_average(self.task_duration, duration)
        if ts is not None and ts.function_id is not None:
            durations = self.function_durations
            durations[ts.function_id] = _moving_average(durations.get(ts.function_id), duration)

    def _free_slots(self, ws: WorkerInfo) -> float:
        """How many more tasks ``ws`` may hold now (see ``worker_saturation``)."""
        if self.worker_saturation == math.inf:
            return math.inf
        return ws.free_slots(self._saturation_slots(ws) + self._backlog(ws))

    def _slots_to_fill(self, ws: WorkerInfo) -> float:
        """How many root tasks to send ``ws`` now: none while it still holds more than half
        its backlog (work for a while yet), then enough to fill it. So a short task's worker
        is topped up by one message of many tasks every half backlog rather than by one
        message per finished task (which cost map ~1.5x the CPU per task of
        ``worker-saturation: inf``). Without a backlog, every free slot is filled at once, as
        in Dask."""
        if self.worker_saturation == math.inf:
            return math.inf
        # Filled when it holds at most its slots and half its backlog. This runs for every
        # finished task: while it holds more than that with the largest backlog it may have,
        # the queue's share (a sum over all workers) need not be worked out.
        slots = self._saturation_slots(ws)
        if ws.free_slots(slots + self._backlog_bound(ws) / 2) < 0:
            return 0
        backlog = self._backlog(ws)
        free = ws.free_slots(slots + backlog)
        return free if free * 2 >= backlog else 0

    def _saturation_slots(self, ws: WorkerInfo) -> int:
        """The tasks ``ws`` may hold beyond its backlog: ``worker_saturation`` x its threads,
        at least one."""
        return max(math.ceil(self.worker_saturation * ws.nthreads), 1)

    def _backlog_bound(self, ws: WorkerInfo) -> int:
        """As many tasks as ``ws``'s threads run in ``worker_backlog``, or in twice the longest
        recent delay in hearing of finished tasks if longer (a worker is topped up at half
        its backlog, which must last until the scheduler catches up): the most its backlog
        may be."""
        if not self.worker_backlog or self.task_duration is None:
            return 0
        seconds = max(self.worker_backlog, 2 * self.report_lag.seconds)
        return math.floor(ws.nthreads * seconds / max(self.task_duration, 1e-6))

    def _backlog(self, ws: WorkerInfo) -> int:
        """How many tasks ``ws`` may hold beyond its saturation slots (see ``worker_backlog``)."""
        bound = self._backlog_bound(ws)
        if not bound:
            return 0
        # at most its threads' share of the work queued and held: the first worker to free a
        # slot must not take what the others would run (with tasks of microseconds, all of
        # it), nor the next one only half of what is left (then a quarter, ... in ever
        # smaller top-ups, each a round trip late)
        threads = held = 0
        for running in self.running.values():
            threads += running.nthreads
            held += len(running.processing) - len(running.long_running)
        share = math.ceil((len(self.queued) + held) * ws.nthreads / max(threads, 1))
        return max(0, min(bound, share - self._saturation_slots(ws)))

    def task_started(self, worker: str, key: str) -> None:
        """``worker`` began executing ``key``: if it dies now, the task shares the blame."""
        ts = self.tasks.get(key)
        if ts is not None and ts.state == "processing" and ts.processing_on == worker:
            ts.started = True

    def task_seceded(self, worker: str, key: str, stimulus_id: str) -> Effects:
        """``key`` left ``worker``'s thread pool (it waits for other tasks): its slot may take a
        queued task, or the tasks it waits for could never run."""
        effects = Effects()
        ts = self.tasks.get(key)
        if ts is not None and ts.state == "processing" and ts.processing_on == worker:
            ws = self.workers[worker]
            ws.long_running.add(ts)
            self._slots_opened.add(ws)
            self._transitions((), stimulus_id, effects)
        return effects

    def add_replicas(self, worker: str, keys: Iterable[str], stimulus_id: str) -> Effects:
        """``worker`` now holds a copy of ``keys`` (it fetched them, or the scheduler moved them
        there): ``who_has`` says so. A copy of a key no longer in memory here is of no use: the
        worker is told to drop it."""
        effects = Effects()
        ws = self.workers.get(worker)
        if ws is None:
            return effects
        unwanted = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                ts.who_has.add(worker)
                ws.has_what.add(ts)
            else:
                unwanted.append(key)
        if unwanted:
            effects.workers[worker].append(
                {"op": "free-keys", "keys": unwanted, "stimulus_id": stimulus_id}
            )
        return effects

    def remove_replicas(self, worker: str, keys: Iterable[str], stimulus_id: str) -> Effects:
        """``worker`` dropped its copy of ``keys``; a key with no copy left is recomputed if
        still needed."""
        effects = Effects()
        ws = self.workers.get(worker)
        recommendations = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or worker not in ts.who_has:
                continue
            ts.who_has.discard(worker)
            if ws is not None:
                ws.has_what.discard(ts)
            if ts.state == "memory" and not ts.who_has:
                recommendations.append((key, "released"))
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def drop_replicas(self, worker: str, keys: Iterable[str], stimulus_id: str) -> Effects:
        """Have ``worker`` drop its copy of each of ``keys`` that another worker also holds."""
        effects = Effects()
        ws = self.workers.get(worker)
        dropped = []
        for key in keys:
            ts = self.tasks.get(key)
            if ws is None or ts is None or worker not in ts.who_has or len(ts.who_has) < 2:
                continue
            ts.who_has.discard(worker)
            ws.has_what.discard(ts)
            dropped.append(key)
        if dropped:
            effects.workers[worker].append(
                {"op": "free-keys", "keys": dropped, "stimulus_id": stimulus_id}
            )
        return effects

    def missing_data(self, key: str, errant_worker: str, stimulus_id: str) -> Effects:
        """A worker could not fetch ``key`` from ``errant_worker``: that replica is gone."""
        effects = Effects()
        ts = self.tasks.get(key)
        ws = self.workers.get(errant_worker)
        if ts is None:
            return effects
        ts.who_has.discard(errant_worker)
        if ws is not None:
            ws.has_what.discard(ts)
        if ts.state == "memory" and not ts.who_has:
            self._transitions([(key, "released")], stimulus_id, effects)
        return effects

    def reschedule(self, key: str, worker: str, stimulus_id: str) -> Effects:
        """A worker gave a task back (its inputs could not be fetched); place it again."""
        effects = Effects()
        ts = self.tasks.get(key)
        if ts is not None and ts.state == "processing" and ts.processing_on == worker:
            self._transitions([(key, "released")], stimulus_id, effects)
        return effects

    def add_client(self, client: str) -> None:
        self.clients.add(client)

    def remove_client(self, client: str, stimulus_id: str) -> Effects:
        self.clients.discard(client)
        wanted = [ts.key for ts in self.tasks.values() if client in ts.who_wants]
        return self.client_releases_keys(client, wanted, stimulus_id)

    def client_desires_keys(self, client: str, keys: Iterable[str], stimulus_id: str) -> Effects:
        """``client`` holds futures of ``keys`` (again): report them, computing any that were
        released meanwhile (an input kept only for its dependents)."""
        effects = Effects()
        recommendations = []
        for key in keys:
            self._desire(client, key, effects)
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "released" and ts.function_id is not None:
                recommendations.append((key, "waiting"))
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def client_releases_keys(self, client: str, keys: Iterable[str], stimulus_id: str) -> Effects:
        effects = Effects()
        recommendations: list[tuple[str, str]] = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or client not in ts.who_wants:
                continue
            ts.who_wants.discard(client)
            if not ts.who_wants and not ts.waiters:
                recommendations.append((key, "forgotten" if ts.state != "memory" else "released"))
        self._transitions(recommendations, stimulus_id, effects)
        return effects

    def cancel(
        self, client: str, keys: Iterable[str], stimulus_id: str, force: bool = False
    ) -> Effects:
        """Stop wanting ``keys`` for this client, and cancel their dependents as Dask does:
        transitively, each one nobody else wants (with ``force``, whoever wants it; their
        clients are told). Computations nobody wants any more are dropped.

        The answer carries ``stimulus_id``: until it arrives, the client knows that what it
        hears of these keys is about the cancelled submission (``storied.client.cancel_fence``).
        """
        keys = list(keys)
        dependents = self._cancelled_dependents(client, keys, force)
        logger.info(
            "Client %s cancels %d keys (force=%s) and %d dependents %s%s (%s)",
            client,
            len(keys),
            force,
            len(dependents),
            dependents[:10],
            "..." if len(dependents) > 10 else "",
            stimulus_id,
        )
        effects = Effects()
        recommendations: list[tuple[str, str]] = []
        told: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        for key in (*keys, *dependents):
            ts = self.tasks.get(key)
            if ts is None:
                continue
            letting_go = set(ts.who_wants) if force else ts.who_wants & {client}
            if not letting_go:
                continue
            ts.who_wants -= letting_go
            for other in letting_go - {client, FIRE_AND_FORGET}:
                told[other].append(key)
            if not ts.who_wants and not ts.waiters:
                recommendations.append((key, "forgotten" if ts.state != "memory" else "released"))
        self._transitions(recommendations, stimulus_id, effects)
        effects.clients[client].append(
            {
                "op": "cancelled-keys",
                "keys": keys,
                "dependents": dependents,
                "stimulus_id": stimulus_id,
            }
        )
        for other, their_keys in told.items():
            effects.clients[other].append(
                {"op": "cancelled-keys", "keys": their_keys, "stimulus_id": stimulus_id}
            )
        effects.events.append(
            (
                client,
                {
                    "action": "cancel",
                    "client": client,
                    "keys": keys,
                    "dependents": dependents,
                    "force": force,
                    "stimulus_id": stimulus_id,
                },
            )
        )
        return effects

    def _cancelled_dependents(self, client: str, keys: list[str], force: bool) -> list[str]:
        """The dependents a cancel of ``keys`` cancels too, as Dask's: those of each cancelled
        task that nobody but ``client`` wants (all of them with ``force``), and theirs in
        turn. A key another client wants is not cancelled, nor are the tasks beyond it."""
        cancelled = set(keys)
        stack = [
            ts
            for key in keys
            if (ts := self.tasks.get(key)) is not None and (force or ts.who_wants <= {client})
        ]
        found: list[str] = []
        while stack:
            for dependent in stack.pop().dependents:
                if dependent.key in cancelled:
                    continue
                if force or dependent.who_wants <= {client}:
                    cancelled.add(dependent.key)
                    found.append(dependent.key)
                    stack.append(dependent)
        return found

    def fire_and_forget(self, keys: Iterable[str], stimulus_id: str) -> Effects:
        """Compute ``keys`` even when no client wants them any more; once each is done (in
        memory or erred), it is let go like a released future."""
        effects = Effects()
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state not in ("memory", "erred"):
                ts.who_wants.add(FIRE_AND_FORGET)
        return effects

    def retry(
        self, client: str, keys: Iterable[str], stimulus_id: str
    ) -> tuple[Effects, list[str]]:
        """Run the erred ``keys`` again, with the erred tasks they depend on.

        Returns the keys retried; each of the other ``keys`` is reported to ``client`` as it
        stands (it may have been retried already).
        """
        effects = Effects()
        keys = list(keys)
        stack = [self.tasks[key] for key in keys if key in self.tasks]
        seen: dict[str, TaskState] = {}
        roots: list[tuple[str, str]] = []
        while stack:
            ts = stack.pop()
            if ts.key in seen or ts.state != "erred":
                continue
            seen[ts.key] = ts
            erred = [dep for dep in ts.dependencies if dep.state == "erred"]
            if erred:
                stack.extend(erred)
            else:
                roots.append((ts.key, "waiting"))
        self._transitions(roots, stimulus_id, effects)
        for key in keys:
            if key not in seen:
                self._desire(client, key, effects)
        return effects, list(seen)

    def task_spec(self, key: str) -> dict[str, Any]:
        """What ran (or would run) as ``key``: its function and arguments, pickled, and the
        keys its arguments refer to. ``KeyError`` for a key not known or not a computation."""
        ts = self.tasks.get(key)
        if ts is None or ts.function_id is None or ts.args is None:
            raise KeyError(f"no task {key!r} with a function is known to the scheduler")
        return {
            "key": key,
            "function": self.functions[ts.function_id],
            "args": ts.args,
            "dependencies": [dep.key for dep in ts.dependencies],
        }

    # ------------------------------------------------------------------ queries

    def who_has(self, keys: Iterable[str]) -> dict[str, list[str]]:
        result = {}
        for key in keys:
            ts = self.tasks.get(key)
            result[key] = sorted(ts.who_has) if ts is not None else []
        return result

    def processing_count(self) -> int:
        return sum(len(ws.processing) for ws in self.workers.values())

    # ------------------------------------------------------------------ cluster management

    def retirement_plan(self, addresses: Iterable[str]) -> dict[str, dict[str, list[str]]]:
        """Where the data only ``addresses`` hold goes before they retire: target worker ->
        {key: the retiring workers holding it}, each key on the remaining worker holding the
        fewest bytes so far. ``ValueError`` if there is such data and no worker remains."""
        retiring = set(addresses)
        remaining = [ws for address, ws in self.workers.items() if address not in retiring]
        load = {ws.address: sum(ts.nbytes for ts in ws.has_what) for ws in remaining}
        plan: dict[str, dict[str, list[str]]] = {}
        for address in sorted(retiring):
            ws = self.workers.get(address)
            if ws is None:
                continue
            for ts in sorted(ws.has_what, key=lambda ts: ts.key):
                if ts.state != "memory" or not ts.who_has <= retiring:
                    continue
                if any(ts.key in keys for keys in plan.values()):
                    continue
                if not load:
                    raise ValueError(
                        f"cannot retire {sorted(retiring)}: they alone hold {ts.key!r} and no "
                        "other worker would remain to take it"
                    )
                target = min(load, key=load.__getitem__)
                load[target] += ts.nbytes
                plan.setdefault(target, {})[ts.key] = sorted(ts.who_has)
        return plan

    def release_all(self, stimulus_id: str) -> Effects:
        """A restart: no client wants anything any more and every task is forgotten; each
        client is told (``restarted``), and its futures are cancelled, as in Dask."""
        effects = Effects()
        for ts in self.tasks.values():
            ts.who_wants.clear()
        self._transitions([(key, "forgotten") for key in list(self.tasks)], stimulus_id, effects)
        for client in self.clients:
            effects.clients[client].append({"op": "restarted"})
        return effects

    # ------------------------------------------------------------------ engine

    def _desire(self, client: str, key: str, effects: Effects) -> None:
        ts = self.tasks.get(key)
        if ts is None:
            effects.clients[client].append({"op": "lost-key", "key": key})
            return
        ts.who_wants.add(client)
        if ts.state == "memory":
            effects.clients[client].append(_key_in_memory(ts))
        elif ts.state == "erred":
            effects.clients[client].append(_task_erred(ts))

    def _transitions(
        self, recommendations: Iterable[tuple[str, str]], stimulus_id: str, effects: Effects
    ) -> None:
        queue = collections.deque(recommendations)
        tasks = self.tasks
        while True:
            while queue:
                key, finish = queue.popleft()
                ts = tasks.get(key)
                if ts is None or ts.state == finish:
                    continue
                queue.extend(self._transition(ts, finish, stimulus_id, effects).items())
            if not self._slots_opened:
                return
            if not self.queued:
                self._slots_opened.clear()
                return
            queue.extend(self._fill_open_slots(stimulus_id, effects))

    def _fill_open_slots(self, stimulus_id: str, effects: Effects) -> Recommendations:
        """Hand queued tasks, best first, to the workers that freed slots."""
        recommendations: Recommendations = {}
        opened, self._slots_opened = self._slots_opened, set()
        # one finished task opens one worker: no order to find
        for ws in sorted(opened, key=_occupancy) if len(opened) > 1 else opened:
            if self.running.get(ws.address) is not ws:
                continue
            free = self._slots_to_fill(ws)
            while free > 0:
                ts = self._pop_queued()
                if ts is None:
                    return recommendations
                recommendations.update(
                    self._transition(ts, "processing", stimulus_id, effects, worker=ws.address)
                )
                free -= 1
                for sibling in placement.queued_siblings(ts):
                    recommendations.update(
                        self._transition(
                            sibling, "processing", stimulus_id, effects, worker=ws.address
                        )
                    )
                    free -= 1
        return recommendations

    def _pop_queued(self) -> TaskState | None:
        queue, tasks = self._queue, self.tasks
        while queue:
            ts = tasks.get(heapq.heappop(queue)[-1])
            if ts is not None and ts.state == "queued":
                return ts
        return None

    def _transition(
        self, ts: TaskState, finish: str, stimulus_id: str, effects: Effects, **kwargs: Any
    ) -> Recommendations:
        start = ts.state
        handler = self._table.get((start, finish))
        if handler is None:
            if start == "released" or finish == "released" or finish == "forgotten":
                if finish == "forgotten" and start != "released":
                    # a copy: the record keeps the dict it was given, unchanged
                    recommendations = dict(self._transition(ts, "released", stimulus_id, effects))
                    if ts.state == "released" and recommendations.get(ts.key) == "forgotten":
                        recommendations.pop(ts.key)
                        recommendations.update(
                            self._transition(ts, "forgotten", stimulus_id, effects)
                        )
                    return recommendations
                return {}
            recommendations = dict(self._transition(ts, "released", stimulus_id, effects))
            recommendations.pop(ts.key, None)
            if ts.state == "released":
                recommendations.update(self._transition(ts, finish, stimulus_id, effects))
            return recommendations
        worker = ts.processing_on
        recommendations = handler(ts, stimulus_id, effects, **kwargs)
        if ts.state == start:
            return recommendations  # nothing changed (e.g. still no worker): nothing to record
        worker = kwargs.get("worker") or worker or ts.processing_on
        self.record.transition(ts.key, start, ts.state, recommendations, stimulus_id, worker)
        if start == "processing" and self.on_leaving_processing is not None:
            self.on_leaving_processing(ts.key)
        if self.on_transition is not None:
            info = {k: v for k, v in kwargs.items() if v is not None and k != "type_name"}
            info.pop("data", None)
            if "startstops" in info:
                info["duration"] = info["startstops"][1] - info["startstops"][0]
            if ts.error is not None and ts.state == "erred":
                info["exception"] = ts.error.get("text")
            if ts.state == "no-worker":
                info["reason"] = self.no_worker_reasons.get(ts.key)
            if worker is not None:
                info["worker"] = worker
            self.on_transition(ts.key, start, ts.state, stimulus_id, info)
        return recommendations

    # ------------------------------------------------------------------ transitions

    def _released_waiting(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        if ts.function_id is None:
            # scattered data that was lost: nothing can recompute it
            return self._lose(ts, effects)
        recommendations: Recommendations = {}
        ts.state = "waiting"
        for dep in ts.dependencies:
            if dep.waiters is NO_LINKS:
                dep.waiters = set()
            dep.waiters.add(ts)
            if dep.state == "erred":
                ts.error = _blame(dep)
                return {ts.key: "erred"}
            if dep.function_id is None and dep.state != "memory":
                ts.error = _error_payload(
                    FutureLostError(
                        f"input {dep.key!r} of {ts.key!r} is gone and cannot be recomputed "
                        "(its data was scattered, or its last future was released)"
                    )
                )
                return {ts.key: "erred"}
            if dep.state != "memory":
                if ts.waiting_on is NO_LINKS:
                    ts.waiting_on = set()
                ts.waiting_on.add(dep)
                if dep.state == "released":
                    recommendations[dep.key] = "waiting"
        if not ts.waiting_on:
            recommendations[ts.key] = "processing"
        return recommendations

    def _lose(self, ts: TaskState, effects: Effects) -> Recommendations:
        for client in ts.who_wants:
            effects.clients[client].append({"op": "lost-key", "key": ts.key})
        ts.who_wants.clear()
        ts.state = "released"
        return {ts.key: "forgotten"} if not ts.dependents else {}

    def _waiting_processing(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        queueable = _queueable(ts)
        if queueable and self.queued and self.running:
            # a root task behind queued ones: while any queue, each worker is as full as it
            # should be until it is next filled, queue first; no worker to choose meanwhile
            if ts.state == "no-worker":
                self._runnable_again(ts)
            return self._enqueue(ts)
        ws = self._choose_worker(ts)
        if ws is None:
            if ts.state == "waiting":
                return self._waiting_no_worker(ts, stimulus_id, effects)
            return {}
        if ts.state == "no-worker":
            self._runnable_again(ts)
        if queueable:
            ws = placement.beside(ts, self.running, ws) or ws
            if self._slots_to_fill(ws) <= 0:
                return self._enqueue(ts)  # it waits here rather than behind a worker's backlog
            # its backlog is a share of the queue, empty until the roots after this one queue:
            # filled at the end of this stimulus, it goes out with these first tasks rather
            # than a round trip later, after the worker has run them and idled
            self._slots_opened.add(ws)
        self._assign(ts, ws, stimulus_id, effects)
        return {}

    def _enqueue(self, ts: TaskState) -> Recommendations:
        ts.state = "queued"
        self.queued.add(ts)
        heapq.heappush(self._queue, (-ts.user_priority, ts.priority, next(self._arrival), ts.key))
        return {}

    def _queued_processing(
        self, ts: TaskState, stimulus_id: str, effects: Effects, *, worker: str
    ) -> Recommendations:
        self.queued.discard(ts)
        self._assign(ts, self.workers[worker], stimulus_id, effects)
        return {}

    def _queued_released(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        self.queued.discard(ts)
        return self._released(ts)

    def _assign(self, ts: TaskState, ws: WorkerInfo, stimulus_id: str, effects: Effects) -> None:
        """Send ``ts`` to ``ws`` to compute."""
        ts.state = "processing"
        ts.processing_on = ws.address
        ts.started = False
        ws.processing.add(ts)
        msg: dict[str, Any] = {
            "op": "compute-task",
            "key": ts.key,
            "function_id": ts.function_id,
            "args": ts.args,
            "priority": ts.priority,
            "stimulus_id": stimulus_id,
        }
        if ts.function_id not in ws.known_functions:
            ws.known_functions.add(ts.function_id)  # type: ignore[arg-type]
            msg["function"] = self.functions[ts.function_id]  # type: ignore[index]
        if ts.dependencies:
            msg["who_has"] = {dep.key: list(dep.who_has) for dep in ts.dependencies}
        if ts.who_wants:
            msg["wanted"] = True
        if ts.resources is not None:
            msg["resources"] = ts.resources
        if ts.user_priority:
            msg["user_priority"] = ts.user_priority
        effects.workers[ws.address].append(msg)

    def _waiting_no_worker(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        ts.state = "no-worker"
        self.unrunnable.add(ts)
        reason = self.no_worker_reasons[ts.key] = self._why_no_worker(ts)
        logger.debug("Task %s has no worker: %s", ts.key, reason)
        return {}

    def _runnable_again(self, ts: TaskState) -> None:
        self.unrunnable.discard(ts)
        self.no_worker_reasons.pop(ts.key, None)

    def _why_no_worker(self, ts: TaskState) -> str:
        """Independent of which workers are here, so it stays true while the task waits."""
        if not self.workers:
            return "no workers"
        if not self.running:
            return "every worker is paused or retiring"
        parts = []
        if ts.restrictions is not None:
            parts.append(f"restricted to workers {sorted(ts.restrictions)}")
        if ts.resources is not None:
            parts.append(f"needs resources {ts.resources}")
        return f"{' and '.join(parts)}: no worker here qualifies"

    def _choose_worker(self, ts: TaskState) -> WorkerInfo | None:
        """The least busy running worker allowed to run ``ts``, preferring ones that hold its
        inputs."""
        workers = self.running
        if not workers:
            return None
        if ts.restrictions is None and ts.resources is None:
            if not ts.dependencies:
                return min(workers.values(), key=_occupancy)
            return _least_busy(ts, workers, None)
        allowed = list(workers.values())
        if ts.resources is not None:
            allowed = [ws for ws in allowed if suffices(ws.resources, ts.resources)]
        if ts.restrictions is not None:
            restrictions = ts.restrictions
            chosen = [ws for ws in allowed if ws.address in restrictions or ws.name in restrictions]
            if chosen or not ts.loose:
                return min(chosen, key=_occupancy) if chosen else None
        return _least_busy(ts, workers, allowed) if allowed else None

    def _processing_memory(
        self,
        ts: TaskState,
        stimulus_id: str,
        effects: Effects,
        *,
        worker: str,
        nbytes: int,
        type_name: str | None,
        startstops: tuple[float, float] | None = None,
        data: bytes | None = None,
    ) -> Recommendations:
        ws = self.workers[worker]
        ws.processing.discard(ts)
        ws.long_running.discard(ts)
        self._slots_opened.add(ws)
        ts.processing_on = None
        ts.state = "memory"
        ts.nbytes, ts.type = nbytes, type_name
        ts.who_has.add(worker)
        ws.has_what.add(ts)
        duration = startstops[1] - startstops[0] if startstops else 0
        self.compute_seconds += duration
        # counted along every path, shared inputs count more than once: never above all the
        # compute done so far, which is what rebuilding could cost at most
        ts.lineage = min(safeguard.lineage_seconds(ts, duration), self.compute_seconds)
        copy = safeguard.safeguard_request(ts, self.running, self.safeguard_lineage, stimulus_id)
        if copy is not None:
            effects.workers[copy.target].append(copy.msg)
            effects.events.append((safeguard.SAFEGUARD_TOPIC, copy.event))
            logger.debug("Safeguard copy of %s: %s -> %s", ts.key, worker, copy.target)
        recommendations: Recommendations = {}
        for dependent in ts.waiters:
            dependent.waiting_on.discard(ts)
            if not dependent.waiting_on and dependent.state == "waiting":
                recommendations[dependent.key] = "processing"
        self._finished_with_dependencies(ts, recommendations)
        ts.who_wants.discard(FIRE_AND_FORGET)
        if not ts.waiters and not ts.who_wants:
            recommendations[ts.key] = "released"
        if ts.who_wants:
            msg = _key_in_memory(ts)
            if data is not None:
                msg["data"] = data
            for client in ts.who_wants:
                effects.clients[client].append(msg)
        return recommendations

    def _finished_with_dependencies(self, ts: TaskState, recommendations: Recommendations) -> None:
        for dep in ts.dependencies:
            dep.waiters.discard(ts)
            if not dep.waiters and not dep.who_wants and dep.state == "memory":
                recommendations[dep.key] = "released"

    def _processing_erred(
        self,
        ts: TaskState,
        stimulus_id: str,
        effects: Effects,
        *,
        worker: str | None = None,
        startstops: tuple[float, float] | None = None,
    ) -> Recommendations:
        address = ts.processing_on
        ws = self.workers.get(address) if address else None
        if ws is not None:
            ws.processing.discard(ts)
            ws.long_running.discard(ts)
            self._slots_opened.add(ws)
        ts.erred_on = worker or address
        ts.processing_on = None
        return self._erred(ts, effects)

    def _waiting_erred(self, ts: TaskState, stimulus_id: str, effects: Effects) -> Recommendations:
        self._runnable_again(ts)
        if ts.error is None:
            blamed = next((d for d in ts.dependencies if d.state == "erred"), None)
            ts.error = (
                _blame(blamed) if blamed else _error_payload(RuntimeError("dependency erred"))
            )
        return self._erred(ts, effects)

    def _erred(self, ts: TaskState, effects: Effects) -> Recommendations:
        ts.state = "erred"
        ts.waiting_on.clear()
        recommendations: Recommendations = {}
        for dependent in ts.dependents:
            if dependent.state in ("waiting", "no-worker", "released") and (
                dependent.function_id is not None
            ):
                dependent.error = _blame(ts)
                recommendations[dependent.key] = "erred"
        self._finished_with_dependencies(ts, recommendations)
        if FIRE_AND_FORGET in ts.who_wants:
            ts.who_wants.discard(FIRE_AND_FORGET)
            if not ts.who_wants and not ts.waiters:
                recommendations[ts.key] = "forgotten"
        if ts.who_wants:
            msg = _task_erred(ts)
            for client in ts.who_wants:
                effects.clients[client].append(msg)
        return recommendations

    def _processing_released(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        address = ts.processing_on
        ws = self.workers.get(address) if address else None
        if ws is not None:
            ws.processing.discard(ts)
            ws.long_running.discard(ts)
            self._slots_opened.add(ws)
            effects.workers[ws.address].append(
                {"op": "free-keys", "keys": [ts.key], "stimulus_id": stimulus_id}
            )
        ts.processing_on = None
        return self._released(ts)

    def _waiting_released(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        self._runnable_again(ts)
        return self._released(ts)

    def _memory_released(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        for address in ts.who_has:
            ws = self.workers.get(address)
            if ws is not None:
                ws.has_what.discard(ts)
                effects.workers[address].append(
                    {"op": "free-keys", "keys": [ts.key], "stimulus_id": stimulus_id}
                )
        ts.who_has.clear()
        recommendations: Recommendations = {}
        for dependent in ts.waiters:
            if dependent.state == "processing":
                recommendations[dependent.key] = "released"
            elif dependent.state in ("waiting", "no-worker"):
                if dependent.waiting_on is NO_LINKS:
                    dependent.waiting_on = set()
                dependent.waiting_on.add(ts)
        if ts.who_wants:
            for client in ts.who_wants:
                effects.clients[client].append({"op": "lost-data", "key": ts.key})
        recommendations.update(self._released(ts))
        return recommendations

    def _erred_released(self, ts: TaskState, stimulus_id: str, effects: Effects) -> Recommendations:
        if ts.erred_on in self.workers:
            # the worker keeps a failed task until told, and would ignore a rerun of it
            effects.workers[ts.erred_on].append(  # type: ignore[index]
                {"op": "free-keys", "keys": [ts.key], "stimulus_id": stimulus_id}
            )
        ts.error = None
        ts.erred_on = None
        recommendations = self._released(ts)
        for dependent in ts.dependents:
            if dependent.state == "erred":
                recommendations[dependent.key] = "released"
        return recommendations

    def _released(self, ts: TaskState) -> Recommendations:
        """Common tail of every transition to released: recompute if needed, else forget.
        A task to compute again keeps its inputs (as Dask's): releasing them would throw away
        results that survive on other workers, and their whole subtrees with them."""
        ts.state = "released"
        ts.waiting_on.clear()
        if ts.who_wants or ts.waiters:
            return {ts.key: "waiting"}
        recommendations: Recommendations = {}
        for dep in ts.dependencies:
            dep.waiters.discard(ts)
            if not dep.waiters and not dep.who_wants and dep.state == "memory":
                recommendations[dep.key] = "released"
        if not ts.dependents:
            recommendations[ts.key] = "forgotten"
        return recommendations

    def _released_forgotten(
        self, ts: TaskState, stimulus_id: str, effects: Effects
    ) -> Recommendations:
        if ts.who_wants or ts.waiters or ts.dependents:
            return {}
        ts.state = "forgotten"
        del self.tasks[ts.key]
        if ts.function_id is not None:
            users = self._function_users
            users[ts.function_id] -= 1
            if users[ts.function_id] <= 0:
                del users[ts.function_id]
                self.functions.pop(ts.function_id, None)
                for ws in self.workers.values():
                    ws.known_functions.discard(ts.function_id)
        recommendations: Recommendations = {}
        for dep in ts.dependencies:
            dep.dependents.discard(ts)
            dep.waiters.discard(ts)
            if not dep.dependents and not dep.who_wants and not dep.waiters:
                recommendations[dep.key] = "forgotten"
        return recommendations


def _occupancy(ws: WorkerInfo) -> float:
    return ws.occupancy


def _moving_average(previous: float | None, value: float) -> float:
    return value if previous is None else 0.9 * previous + 0.1 * value


def _least_busy(
    ts: TaskState, workers: Mapping[str, WorkerInfo], allowed: list[WorkerInfo] | None
) -> WorkerInfo:
    """Among ``allowed`` (None: all ``workers``), the least busy of those holding most of
    ``ts``'s input bytes, else the least busy of all allowed."""
    if ts.dependencies:
        # a plain dict: this runs for every task with inputs, and a Counter costs more
        holders: dict[str, int] = {}
        for dep in ts.dependencies:
            size = dep.nbytes + 1
            for address in dep.who_has:
                holders[address] = holders.get(address, 0) + size
        if allowed is not None:
            permitted = {ws.address for ws in allowed}
            holders = {a: n for a, n in holders.items() if a in permitted}
        if holders:
            best = max(holders.values())
            candidates = [workers[a] for a, n in holders.items() if n == best and a in workers]
            if candidates:
                return min(candidates, key=_occupancy)
    return min(workers.values() if allowed is None else allowed, key=_occupancy)


def _queueable(ts: TaskState) -> bool:
    """Root tasks (no inputs, no restrictions) queue on the scheduler; a task with inputs goes
    straight to a holder of them, as Dask sends its non-root tasks."""
    return not ts.dependencies and ts.restrictions is None and ts.resources is None


def _believed_running(ws: WorkerInfo) -> set[TaskState]:
    """The tasks ``ws`` was executing, as far as the scheduler can tell: those it said it
    started, and, for thread slots not so accounted for, the next in run order (a task that
    kills its worker at once may do so before the worker's word of it leaves)."""
    running = {ts for ts in ws.processing if ts.started}
    unaccounted = ws.nthreads - len(running)
    if unaccounted > 0:
        rest = sorted((ts for ts in ws.processing if not ts.started), key=_rank)
        running.update(rest[:unaccounted])
    return running


def _rank(ts: TaskState) -> tuple[float, int]:
    """Run order: higher user priority first, then older generation, then call order."""
    return (-ts.user_priority, ts.priority)


def _check_options(key: str, options: Any) -> None:
    """Raise ``ValueError`` saying what is wrong with a task's options from the wire."""
    if not isinstance(options, Mapping):
        raise ValueError(f"task {key!r}: options must be a dict or None, not {options!r}")
    unknown = set(options) - {"priority", "resources", "loose"}
    if unknown:
        raise ValueError(f"task {key!r}: unknown options {sorted(unknown)}")
    priority = options.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int | float) or math.isnan(priority):
        raise ValueError(f"task {key!r}: priority must be a number, not {priority!r}")
    if not isinstance(options.get("loose", False), bool):
        raise ValueError(f"task {key!r}: loose must be a bool, not {options['loose']!r}")
    try:
        check_resources(options.get("resources", {}), f"task {key!r}: resources")
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _key_in_memory(ts: TaskState) -> dict[str, Any]:
    return {"op": "key-in-memory", "key": ts.key, "type": ts.type, "workers": list(ts.who_has)}


def _task_erred(ts: TaskState) -> dict[str, Any]:
    return {"op": "task-erred", "key": ts.key, **(ts.error or {})}


def _blame(dep: TaskState) -> dict[str, Any]:
    error = dict(dep.error or {})
    error.setdefault("blame", dep.key)
    return error


def _error_payload(exc: BaseException) -> dict[str, Any]:
    return {
        "exception": pickle_dumps(exc),
        "traceback": None,
        "text": f"{type(exc).__name__}: {exc}",
    }
