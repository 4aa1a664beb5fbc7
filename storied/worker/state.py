"""The worker's task state machine: stimuli in, instructions out.

It decides what to fetch from which peer, what to run next and what to tell the scheduler; the
server shell (``storied.worker.server``) carries out the instructions and turns their outcomes
back into stimuli. Every transition goes to the record with the stimulus that caused it.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from storied.resources import Resources, suffices
from storied.scheduler.state import Recorder

#: States a task can be in on a worker ("constrained": ready, but waits for resources;
#: "long-running": it runs, seceded from the thread pool).
STATES = (
    "released", "fetch", "flight", "waiting", "ready", "constrained", "executing",
    "long-running", "memory", "error",
)  # fmt: skip
#: States of a task whose function is running in a thread (``long-running``: it seceded).
RUNNING = ("executing", "long-running")
#: States of a task given to this worker that has not started: work stealing may take it.
GIVEN_BACK = ("waiting", "ready", "constrained")


class WorkerTask:
    """One task as this worker sees it. A hand-written class: one is made per task."""

    __slots__ = (
        "args", "assigned", "cancelled", "dependencies", "dependents", "function_id", "key",
        "priority", "resources", "state", "user_priority", "waiting_for", "wanted", "who_has",
    )  # fmt: skip

    def __init__(
        self, key: str, state: str = "released", priority: int = 0, assigned: bool = False
    ) -> None:
        self.key = key
        self.state = state
        self.priority = priority
        #: higher runs first; ``priority`` (the scheduler's order) breaks ties
        self.user_priority: float = 0
        #: what it claims of the worker's resources while it runs
        self.resources: Resources | None = None
        self.function_id: str | None = None
        self.args: bytes | None = None
        #: True once the scheduler asked this worker to compute it or to hold a copy of it
        #: (else it is an input fetched for a task here)
        self.assigned = assigned
        self.dependencies: set[WorkerTask] = set()
        self.dependents: set[WorkerTask] = set()
        self.waiting_for: set[WorkerTask] = set()
        self.who_has: list[str] = []
        #: the scheduler released it while it ran; drop the result when it finishes
        self.cancelled = False
        #: a client waits for this result (so a small one is sent along with task-finished)
        self.wanted = False

    def __repr__(self) -> str:
        return f"<WorkerTask {self.key!r} {self.state}>"


@dataclass(frozen=True, slots=True)
class Execute:
    """Run the task in a thread; the scheduler hears that it started (it may be blamed if the
    worker dies while it runs)."""

    key: str
    function_id: str
    args: bytes
    #: the arguments refer to other tasks' results (else they unpickle on their own)
    has_inputs: bool = False
    #: a client waits for the result (a small one is pickled in the task's thread, to travel
    #: with the task-finished message)
    wanted: bool = False
    #: handed over beyond the threads (``WorkerState.lookahead``): it waits for a thread to
    #: finish its current task, and that thread reports its start
    queued: bool = False


@dataclass(frozen=True, slots=True)
class GatherDep:
    worker: str
    keys: tuple[str, ...]
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class SendMessage:
    msg: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ForgetData:
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Take ``key`` back from the executor's queue if no thread has taken it yet (a task that
    outranks it is ready, or the scheduler would steal it): ``execute_withdrawn`` if that
    worked, else ``execute_started`` (a thread has it)."""

    key: str
    stimulus_id: str
    #: a steal request waits for the outcome (``execute_withdrawn`` and ``steal_request``)
    steal: bool = False


@dataclass(frozen=True, slots=True)
class Rejoin:
    """The seceded task ``key`` has a thread slot again: its thread may go on."""

    key: str


Instruction = Execute | GatherDep | SendMessage | ForgetData | Rejoin | Withdraw
TransitionHook = Callable[[str, str, str, str], None]
#: A worker's transitions recommend nothing; the record keeps what it is handed, so they all
#: share one empty dict that nobody changes rather than keeping a new one each.
NO_RECOMMENDATIONS: dict[str, str] = {}


class WorkerState:
    """The tasks one worker knows about and what it should do next."""

    def __init__(
        self,
        nthreads: int,
        recorder: Recorder,
        on_transition: TransitionHook | None = None,
        resources: Mapping[str, float] | None = None,
        lookahead: int = 0,
    ) -> None:
        """``lookahead``: ready tasks handed to the executor beyond its threads, so a thread
        that finishes a task starts the next one at once instead of waiting a round trip
        through the event loop for it (see ``_start_ready``)."""
        self.nthreads = nthreads
        self.lookahead = lookahead
        self.record = recorder
        self.on_transition = on_transition
        self.tasks: dict[str, WorkerTask] = {}
        self.executing: set[WorkerTask] = set()
        #: tasks that seceded from the thread pool (``secede()``): they hold no thread slot
        self.long_running: set[WorkerTask] = set()
        #: seceded tasks waiting in ``rejoin()`` for a slot, first come first served
        self._rejoining: collections.deque[WorkerTask] = collections.deque()
        #: seceded tasks that have a slot again: they run outside the executor's own threads
        self._rejoined: set[WorkerTask] = set()
        #: tasks handed to the executor beyond its threads whose start we have not heard of,
        #: with their -user priority: a task of a higher one that comes takes over
        self._queued: dict[WorkerTask, float] = {}
        self.total_resources: Resources = dict(resources or {})
        #: what running tasks have not claimed
        self.available_resources: Resources = dict(self.total_resources)
        #: heaps of (-user priority, priority, arrival, key): ready tasks, and ready tasks that
        #: need resources (which wait, the first one holding back the rest, until they fit)
        self._ready: list[tuple[float, int, int, str]] = []
        self._constrained: list[tuple[float, int, int, str]] = []
        self._arrival = itertools.count()
        #: memory is short: start no new tasks (data is still served, seceded tasks rejoin)
        self.paused = False

    # ------------------------------------------------------------------ stimuli

    def compute_task(
        self,
        key: str,
        function_id: str,
        args: bytes,
        priority: int,
        who_has: Mapping[str, Iterable[str]],
        stimulus_id: str,
        wanted: bool = False,
        resources: Mapping[str, float] | None = None,
        user_priority: float = 0,
    ) -> list[Instruction]:
        """``wanted``: a client waits for this very result; ``resources``: it claims these
        while it runs; ``user_priority``: higher runs first."""
        instructions: list[Instruction] = []
        ts = self.tasks.get(key)
        if ts is None:
            ts = self.tasks[key] = WorkerTask(key)
        ts.wanted = wanted
        if ts.state in RUNNING and ts.cancelled:
            # sent again while the cancelled run goes on: that run is this assignment's (and a
            # steal request must hear "executing", as Dask's worker answers)
            ts.cancelled, ts.assigned = False, True
            return instructions
        if ts.state == "memory":
            if not ts.assigned:
                ts.assigned = True
            instructions.append(SendMessage(self._finished_msg(key, 0, None, stimulus_id)))
            return instructions
        if ts.state not in ("released", "fetch", "flight"):
            return instructions
        ts.assigned = True
        ts.function_id, ts.args, ts.priority = function_id, args, priority
        ts.user_priority, ts.resources = user_priority, resources or None
        fetch: dict[str, list[str]] = {}
        for dep_key, holders in who_has.items():
            dep = self.tasks.get(dep_key)
            if dep is None:
                dep = self.tasks[dep_key] = WorkerTask(dep_key, priority=priority)
            dep.dependents.add(ts)
            ts.dependencies.add(dep)
            if dep.state != "memory":
                ts.waiting_for.add(dep)
                if dep.state == "released":
                    dep.who_has = [h for h in holders]
                    self._transition(dep, "fetch", stimulus_id)
                    if dep.who_has:
                        fetch.setdefault(dep.who_has[0], []).append(dep.key)
        if ts.waiting_for:
            self._transition(ts, "waiting", stimulus_id)
        else:
            self._make_ready(ts, stimulus_id)
        for worker, keys in fetch.items():
            for dep_key in keys:
                self._transition(self.tasks[dep_key], "flight", stimulus_id)
            instructions.append(GatherDep(worker, tuple(keys), stimulus_id))
        missing = [self.tasks[k] for k in who_has if not self.tasks[k].who_has]
        for dep in missing:
            if dep.state == "fetch":
                instructions.extend(self._missing_dependency(dep, stimulus_id))
        instructions.extend(self._start_ready(stimulus_id))
        return instructions

    def execute_success(
        self,
        key: str,
        nbytes: int,
        type_name: str,
        start: float,
        stop: float,
        stimulus_id: str,
        thread: int = 0,
        inline: bytes | None = None,
    ) -> list[Instruction]:
        """``inline``: the pickled result, when small enough to ride along to the client."""
        msg = self._finished_msg(key, nbytes, type_name, stimulus_id)
        msg["startstops"] = [start, stop, thread]
        if inline is not None:
            msg["data"] = inline
        return self._executed(key, "memory", msg, stimulus_id)

    def execute_failure(
        self,
        key: str,
        error: dict[str, Any],
        start: float,
        stop: float,
        stimulus_id: str,
        thread: int = 0,
    ) -> list[Instruction]:
        msg = {
            "op": "task-erred",
            "key": key,
            "error": error,
            "startstops": [start, stop, thread],
            "stimulus_id": stimulus_id,
        }
        return self._executed(key, "error", msg, stimulus_id)

    def _executed(
        self, key: str, finish: str, msg: dict[str, Any], stimulus_id: str
    ) -> list[Instruction]:
        """A run ended: report it, or drop it if the scheduler released the task meanwhile."""
        ts = self.tasks.get(key)
        instructions: list[Instruction] = []
        if ts is None or ts.state not in RUNNING:
            return instructions
        self.executing.discard(ts)
        self.long_running.discard(ts)
        self._rejoined.discard(ts)
        self._queued.pop(ts, None)
        if ts.resources is not None:
            available = self.available_resources
            for name, amount in ts.resources.items():
                available[name] += amount
        if ts.cancelled:
            self._transition(ts, "released", stimulus_id)
            if finish == "memory":
                instructions.append(ForgetData((key,)))
            self._forget(ts, instructions)
        else:
            self._transition(ts, finish, stimulus_id)
            instructions.append(SendMessage(msg))
            self._release_inputs(ts, instructions)
            if finish == "memory":
                self._wake_dependents(ts, stimulus_id)
        instructions.extend(self._start_ready(stimulus_id))
        return instructions

    def execute_started(self, key: str) -> list[Instruction]:
        """A thread took ``key``, handed over beyond the threads (``Execute.queued``): the
        scheduler hears that it runs (it is blamed if the worker dies now), and it can no
        longer be withdrawn."""
        ts = self.tasks.get(key)
        if ts is None or self._queued.pop(ts, None) is None:
            return []
        return [SendMessage({"op": "task-started", "key": key})]

    def execute_withdrawn(
        self, key: str, stimulus_id: str, steal: bool = False
    ) -> list[Instruction]:
        """``key`` was taken back from the executor before any thread took it (``Withdraw``):
        it is ready again, behind the task that outranks it, or given back to a ``steal``."""
        instructions: list[Instruction] = []
        ts = self.tasks.get(key)
        if ts is None or self._queued.pop(ts, None) is None:
            return instructions
        self.executing.discard(ts)
        if ts.cancelled:  # released by the scheduler while it waited: it need not run at all
            ts.cancelled = False
            self._release(ts, stimulus_id, instructions, told=True)
        else:
            self._make_ready(ts, stimulus_id)
        if steal:
            instructions.extend(self.steal_request(key, stimulus_id))
        instructions.extend(self._start_ready(stimulus_id))
        return instructions

    def gather_success(
        self, worker: str, received: Iterable[str], stimulus_id: str
    ) -> list[Instruction]:
        instructions: list[Instruction] = []
        acquired = []
        for key in received:
            dep = self.tasks.get(key)
            if dep is None or dep.state != "flight":
                continue
            self._transition(dep, "memory", stimulus_id)
            self._wake_dependents(dep, stimulus_id)
            if not dep.dependents and not dep.assigned:
                self._forget(dep, instructions)
                instructions.append(ForgetData((key,)))
            else:
                acquired.append(key)
        if acquired:
            instructions.append(
                SendMessage({"op": "add-keys", "keys": acquired, "stimulus_id": stimulus_id})
            )
        instructions.extend(self._start_ready(stimulus_id))
        return instructions

    def _wake_dependents(self, dep: WorkerTask, stimulus_id: str) -> None:
        """``dep`` is in memory here: the tasks that waited only for it are ready. (A task can
        wait for one this worker runs: the scheduler took a cancelled run's result for the
        next run's and assigned a dependent while the task ran here again.)"""
        for dependent in list(dep.dependents):
            dependent.waiting_for.discard(dep)
            if not dependent.waiting_for and dependent.state == "waiting":
                self._make_ready(dependent, stimulus_id)

    def acquire_replicas(
        self, who_has: Mapping[str, Iterable[str]], stimulus_id: str
    ) -> list[Instruction]:
        """The scheduler wants a copy of each key here, fetched from one of its holders."""
        instructions: list[Instruction] = []
        fetch: dict[str, list[str]] = {}
        for key, holders in who_has.items():
            ts = self.tasks.get(key)
            if ts is None:
                ts = self.tasks[key] = WorkerTask(key)
            ts.assigned = True
            if ts.state != "released":
                continue  # here, or on its way already
            ts.who_has = list(holders)
            if ts.who_has:
                self._transition(ts, "flight", stimulus_id)
                fetch.setdefault(ts.who_has[0], []).append(key)
            else:
                self._forget(ts, instructions)
        for worker, keys in fetch.items():
            instructions.append(GatherDep(worker, tuple(keys), stimulus_id))
        return instructions

    def gather_failure(
        self, worker: str, keys: Iterable[str], stimulus_id: str
    ) -> list[Instruction]:
        """``worker`` could not give us ``keys``: try other holders, else report them missing."""
        instructions: list[Instruction] = []
        retry: dict[str, list[str]] = {}
        for key in keys:
            dep = self.tasks.get(key)
            if dep is None or dep.state != "flight":
                continue
            if worker in dep.who_has:
                dep.who_has.remove(worker)
            instructions.append(
                SendMessage(
                    {
                        "op": "missing-data",
                        "key": key,
                        "errant_worker": worker,
                        "stimulus_id": stimulus_id,
                    }
                )
            )
            self._transition(dep, "fetch", stimulus_id)
            if dep.who_has:
                retry.setdefault(dep.who_has[0], []).append(key)
            else:
                instructions.extend(self._missing_dependency(dep, stimulus_id))
                if not dep.dependents:  # a replica the scheduler asked for: none to be had
                    self._release(dep, stimulus_id, instructions, told=True)
        for peer, peer_keys in retry.items():
            for key in peer_keys:
                self._transition(self.tasks[key], "flight", stimulus_id)
            instructions.append(GatherDep(peer, tuple(peer_keys), stimulus_id))
        return instructions

    def secede(self, key: str, stimulus_id: str) -> list[Instruction]:
        """The running task ``key`` left the thread pool (it waits on other tasks): its slot
        goes to the next ready task."""
        ts = self.tasks.get(key)
        if ts is None or ts.state != "executing":
            return []
        self.executing.discard(ts)
        self._rejoined.discard(ts)
        self.long_running.add(ts)
        self._transition(ts, "long-running", stimulus_id)
        return self._start_ready(stimulus_id)

    def rejoin(self, key: str, stimulus_id: str) -> list[Instruction]:
        """The seceded task ``key`` wants a thread slot back; ``Rejoin`` once it has one.

        A task this state does not know as seceded (the worker started afresh meanwhile) is let
        go at once, so its thread never waits for a slot that will not come.
        """
        ts = self.tasks.get(key)
        if ts is None or ts.state != "long-running":
            return [Rejoin(key)]
        self._rejoining.append(ts)
        return self._start_ready(stimulus_id)

    def pause(self, stimulus_id: str) -> list[Instruction]:
        """Memory is short: start no new tasks until ``unpause``."""
        self.paused = True
        return []

    def unpause(self, stimulus_id: str) -> list[Instruction]:
        """Memory is back under the pause threshold: fill the thread slots again."""
        self.paused = False
        return self._start_ready(stimulus_id)

    def gather_error(self, key: str, error: dict[str, Any], stimulus_id: str) -> list[Instruction]:
        """``key`` arrived but could not be unpickled here: every task waiting for it fails
        with that error (fetching it again, from anyone, would fail the same way)."""
        instructions: list[Instruction] = []
        dep = self.tasks.get(key)
        if dep is None or dep.state != "flight":
            return instructions
        self._transition(dep, "error", stimulus_id)
        for dependent in list(dep.dependents):
            if dependent.state != "waiting":
                continue
            self._transition(dependent, "error", stimulus_id)
            instructions.append(
                SendMessage(
                    {
                        "op": "task-erred",
                        "key": dependent.key,
                        "error": error,
                        "stimulus_id": stimulus_id,
                    }
                )
            )
            dependent.waiting_for.clear()
            self._release_inputs(dependent, instructions)
        self._forget(dep, instructions)
        return instructions

    def steal_request(self, key: str, stimulus_id: str) -> list[Instruction]:
        """The scheduler would move ``key`` to another worker: give it back if it has not
        started here (waiting for inputs or a thread), else keep it. Either way the answer
        says the state it was in, which is how the scheduler knows whether the steal holds."""
        ts = self.tasks.get(key)
        if ts is not None and ts in self._queued:
            # handed to the executor, perhaps not started: the executor is asked first
            return [Withdraw(key, stimulus_id, steal=True)]
        state = ts.state if ts is not None and ts.assigned else None
        instructions: list[Instruction] = [
            SendMessage(
                {"op": "steal-response", "key": key, "state": state, "stimulus_id": stimulus_id}
            )
        ]
        if ts is not None and state in GIVEN_BACK:
            ts.assigned = False
            self._release(ts, stimulus_id, instructions, told=True)
        return instructions

    def free_keys(
        self, keys: Iterable[str], stimulus_id: str, stimulus_ids: Iterable[str] | None = None
    ) -> list[Instruction]:
        """The scheduler no longer needs these tasks here. ``stimulus_ids``: each key's own,
        when the scheduler merged the releases of several stimuli into one message
        (``storied.scheduler.coalesce``)."""
        instructions: list[Instruction] = []
        keys = list(keys)
        causes = [stimulus_id] * len(keys) if stimulus_ids is None else stimulus_ids
        for key, cause in zip(keys, causes, strict=True):
            ts = self.tasks.get(key)
            if ts is None:
                continue
            ts.assigned = False
            if ts.state in RUNNING:
                ts.cancelled = True
                continue
            if ts.dependents and ts.state == "memory":
                continue  # still an input of a task here; dropped when that one is done
            self._release(ts, cause, instructions, told=True)
        instructions.extend(self._start_ready(stimulus_id))
        return instructions

    # ------------------------------------------------------------------ internals

    def _finished_msg(
        self, key: str, nbytes: int, type_name: str | None, stimulus_id: str
    ) -> dict[str, Any]:
        return {
            "op": "task-finished",
            "key": key,
            "nbytes": nbytes,
            "type": type_name,
            "stimulus_id": stimulus_id,
        }

    def _missing_dependency(self, dep: WorkerTask, stimulus_id: str) -> list[Instruction]:
        """No peer holds ``dep``: give its dependents back to the scheduler to place again."""
        instructions: list[Instruction] = []
        for dependent in list(dep.dependents):
            instructions.append(
                SendMessage(
                    {
                        "op": "reschedule",
                        "key": dependent.key,
                        "stimulus_id": stimulus_id,
                    }
                )
            )
            dependent.assigned = False
            self._release(dependent, stimulus_id, instructions)
        return instructions

    def _make_ready(self, ts: WorkerTask, stimulus_id: str) -> None:
        entry = (-ts.user_priority, ts.priority, next(self._arrival), ts.key)
        if ts.resources is None:
            self._transition(ts, "ready", stimulus_id)
            heapq.heappush(self._ready, entry)
        else:
            self._transition(ts, "constrained", stimulus_id)
            heapq.heappush(self._constrained, entry)

    def _start_ready(self, stimulus_id: str) -> list[Instruction]:
        """Fill free thread slots: seceded tasks coming back first, then ready tasks."""
        instructions: list[Instruction] = []
        rejoining = self._rejoining
        while rejoining and len(self.executing) < self.nthreads:
            ts = rejoining.popleft()
            if ts.state != "long-running" or self.tasks.get(ts.key) is not ts:
                continue
            self.long_running.discard(ts)
            self.executing.add(ts)
            self._rejoined.add(ts)
            self._transition(ts, "executing", stimulus_id)
            instructions.append(Rejoin(ts.key))
        # Beyond the threads, ``lookahead`` more go to the executor, which counts them as
        # executing (as Dask's "handed to the executor"). Not while a seceded task waits for a
        # slot (it would wait behind every task handed meanwhile) or runs in one again (it
        # runs outside the executor's threads, which would start a queued task beside it), nor
        # for tasks that claim resources (they would claim them while waiting).
        handed = self.nthreads
        if not (rejoining or self._rejoined or self._constrained):
            handed += self.lookahead
        while not self.paused and len(self.executing) < handed:
            ts = self._next_ready() if self._constrained else self._pop_live(self._ready, "ready")
            if ts is None:
                break
            if ts.resources is not None:
                available = self.available_resources
                for name, amount in ts.resources.items():
                    available[name] = available.get(name, 0.0) - amount
            self._transition(ts, "executing", stimulus_id)
            self.executing.add(ts)
            queued = len(self.executing) > self.nthreads
            if queued:
                self._queued[ts] = -ts.user_priority
            instructions.append(
                Execute(
                    ts.key,
                    ts.function_id,
                    ts.args,  # type: ignore[arg-type]
                    bool(ts.dependencies),
                    ts.wanted,
                    queued,
                )
            )
        if self._queued:
            instructions.extend(self._outranked(stimulus_id))
        return instructions

    def _outranked(self, stimulus_id: str) -> list[Instruction]:
        """Withdraw the task of lowest user priority waiting in the executor if a ready task
        has a higher one, so that handing tasks ahead never lets a later, more urgent task
        wait behind them (one at a time: each withdrawal hands the best ready task over in
        its place). Within one user priority, the scheduler's order (dask's, for a graph)
        may be passed by at most the tasks handed ahead: taking them back for each task of
        the graph that comes earlier in it cost a dask.array graph a withdrawal every third
        task."""
        self._drop_stale(self._ready, "ready")
        if not self._ready:
            return []
        worst = max(self._queued, key=self._queued.__getitem__)
        if self._ready[0][0] < self._queued[worst]:
            return [Withdraw(worst.key, stimulus_id)]
        return []

    def _next_ready(self) -> WorkerTask | None:
        """The first ready task, or the first constrained one if it ranks higher and fits."""
        self._drop_stale(self._constrained, "constrained")
        self._drop_stale(self._ready, "ready")
        constrained, ready = self._constrained, self._ready
        if constrained and (not ready or constrained[0] < ready[0]):
            head = self.tasks[constrained[0][-1]]
            if suffices(self.available_resources, head.resources or {}):
                return self._pop_live(constrained, "constrained")
        return self._pop_live(ready, "ready")

    def _drop_stale(self, heap: list[tuple[float, int, int, str]], state: str) -> None:
        """Pop entries of tasks that left ``state`` since they were queued."""
        tasks = self.tasks
        while heap:
            ts = tasks.get(heap[0][-1])
            if ts is not None and ts.state == state:
                return
            heapq.heappop(heap)

    def _pop_live(self, heap: list[tuple[float, int, int, str]], state: str) -> WorkerTask | None:
        """The first task of ``heap`` still in ``state``, popped (stale entries are dropped)."""
        tasks = self.tasks
        while heap:
            ts = tasks.get(heapq.heappop(heap)[-1])
            if ts is not None and ts.state == state:
                return ts
        return None

    def _release_inputs(self, ts: WorkerTask, instructions: list[Instruction]) -> None:
        """A task finished: inputs fetched only for it can go."""
        for dep in ts.dependencies:
            dep.dependents.discard(ts)
            if not dep.dependents and not dep.assigned and dep.state == "memory":
                self._transition(dep, "released", "inputs-done")
                instructions.append(ForgetData((dep.key,)))
                instructions.append(_dropped(dep.key, "inputs-done"))
                self._forget(dep, instructions)
        ts.dependencies.clear()
        ts.args = None

    def _release(
        self,
        ts: WorkerTask,
        stimulus_id: str,
        instructions: list[Instruction],
        told: bool = False,
    ) -> None:
        """``told``: the scheduler asked for it (so it needs no word of the dropped data)."""
        had_data = ts.state == "memory"
        if ts.state != "released":
            self._transition(ts, "released", stimulus_id)
        if had_data:
            instructions.append(ForgetData((ts.key,)))
            if not told:
                instructions.append(_dropped(ts.key, stimulus_id))
        for dep in ts.dependencies:
            dep.dependents.discard(ts)
            if not dep.dependents and not dep.assigned:
                self._release(dep, stimulus_id, instructions)
        ts.dependencies.clear()
        ts.waiting_for.clear()
        self._forget(ts, instructions)

    def _forget(self, ts: WorkerTask, instructions: list[Instruction]) -> None:
        if not ts.dependents and self.tasks.get(ts.key) is ts:
            del self.tasks[ts.key]

    def _transition(self, ts: WorkerTask, finish: str, stimulus_id: str) -> None:
        start = ts.state
        ts.state = finish
        self.record.transition(ts.key, start, finish, NO_RECOMMENDATIONS, stimulus_id)
        if self.on_transition is not None:
            self.on_transition(ts.key, start, finish, stimulus_id)


def _dropped(key: str, stimulus_id: str) -> SendMessage:
    """Tell the scheduler this worker no longer holds ``key`` (so ``who_has`` stays exact)."""
    return SendMessage({"op": "release-worker-data", "keys": [key], "stimulus_id": stimulus_id})
