"""Work stealing: move tasks that wait on a busy worker to an idle one (as Dask's WorkStealing).

Pure, like ``SchedulerState``: ``balance`` reads the state and returns the steal requests to
send; ``steal_response`` takes a victim's answer and returns what follows. A steal is two-way:
the victim is asked to give the task back, and does so only if it has not started it (the
worker decides, so a running task is never taken from under it); only then does the thief get
it. A steal whose task leaves ``processing`` before the answer comes (finished, released, given
back by the victim, even if then sent to the victim again) is over, as in Dask: the answer is
about an assignment that ended, and changes nothing. Every request and its outcome is an event
under ``STEALING_TOPIC``, and a confirmed steal is a ``processing -> processing`` transition in
the task's story, both with the steal's stimulus id.

Whether a move pays is Dask's rule: the thief's expected finish (its load, the transfer of
inputs it lacks, the compute) must come before the victim would be half-way through the task.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storied.resources import suffices
from storied.scheduler.state import Effects, _rank

if TYPE_CHECKING:
    from storied.scheduler.state import SchedulerState, TaskState, WorkerInfo

#: the event topic of every steal request and its outcome
STEALING_TOPIC = "stealing"
#: seconds a steal costs before the thief can start when inputs must move: round trips to the
#: victim and the thief (Dask's conservative figure)
LATENCY = 0.1
#: bytes per second assumed between workers (Dask's ``distributed.scheduler.bandwidth``)
BANDWIDTH = 100e6
#: expected seconds of a task whose function has never finished (Dask's default)
UNKNOWN_DURATION = 0.5
#: tasks expected to run shorter than this are not worth a round trip to steal
MIN_DURATION = 0.001
#: a victim's answers that mean it gave the task back (it had not started it)
GIVEN_BACK = frozenset({"waiting", "ready", "constrained"})
#: answers that mean the victim no longer knows the task: it is placed again
UNKNOWN = frozenset({"released", None})


@dataclass(slots=True)
class Steal:
    key: str
    victim: str
    thief: str
    stimulus_id: str
    #: expected seconds the task adds to the thief's threads, and removes from the victim's
    thief_cost: float
    victim_cost: float


class WorkStealing:
    """The steals in flight for one ``SchedulerState``, and the choice of new ones."""

    def __init__(
        self, state: SchedulerState, bandwidth: float = BANDWIDTH, latency: float = LATENCY
    ) -> None:
        if not bandwidth > 0 or not latency >= 0:
            raise ValueError(
                f"bandwidth must be bytes/s above 0 and latency seconds >= 0, "
                f"not {bandwidth!r} and {latency!r}"
            )
        self.state = state
        self.bandwidth = bandwidth
        self.latency = latency
        #: key -> the steal asked of its victim, not answered yet
        self.in_flight: dict[str, Steal] = {}
        #: key -> a steal not answered yet whose task left its victim meanwhile (released,
        #: finished, given back): the answer, about an assignment that is over, changes nothing
        self.aborted: dict[str, Steal] = {}
        state.on_leaving_processing = self._abort
        self._ids = itertools.count()
        #: steals confirmed so far (for the record and the dashboard)
        self.confirmed = 0

    # ------------------------------------------------------------------ estimates

    def expected_duration(self, ts: TaskState) -> float:
        """Seconds ``ts`` should run: its function's moving average, else all tasks'."""
        state = self.state
        duration = state.function_durations.get(ts.function_id or "")
        if duration is None:
            duration = state.task_duration
        return UNKNOWN_DURATION if duration is None else duration

    def transfer_time(self, ts: TaskState, ws: WorkerInfo) -> float:
        """Seconds to bring ``ts``'s inputs that ``ws`` lacks to it (0 if it has them all)."""
        missing = [dep.nbytes for dep in ts.dependencies if ws.address not in dep.who_has]
        if not missing:
            return 0.0
        return sum(missing) / self.bandwidth + self.latency

    def load(self, ws: WorkerInfo) -> float:
        """Expected seconds of work per thread that ``ws`` holds, steals in flight included;
        infinite for a worker that starts nothing new (paused or retiring)."""
        if ws.status != "running":
            return math.inf
        busy = sum(self.expected_duration(ts) for ts in ws.processing - ws.long_running)
        for steal in self.in_flight.values():
            if steal.thief == ws.address:
                busy += steal.thief_cost
            elif steal.victim == ws.address:
                busy -= steal.victim_cost
        return busy / ws.nthreads

    # ------------------------------------------------------------------ stimuli

    def balance(self) -> Effects:
        """Ask busy workers to give tasks they have not started to idle ones, where it pays."""
        effects = Effects()
        state = self.state
        thieves = [ws for ws in state.running.values() if self._idle(ws)]
        if not thieves:
            return effects
        loads = {ws.address: self.load(ws) for ws in state.workers.values()}
        victims = sorted(
            (ws for ws in state.workers.values() if ws not in thieves and self._backlogged(ws)),
            key=lambda ws: loads[ws.address],
            reverse=True,
        )
        budget = {ws.address: self._room(ws) for ws in thieves}
        for victim in victims:
            for ts in self._stealable(victim):
                candidates = [ws for ws in thieves if budget[ws.address] > 0]
                if not candidates:
                    return effects
                steal = self._plan(ts, victim, candidates, loads)
                if steal is None:
                    continue
                self.in_flight[ts.key] = steal
                budget[steal.thief] -= 1
                thief = state.workers[steal.thief]
                loads[steal.thief] += steal.thief_cost / thief.nthreads
                loads[victim.address] -= steal.victim_cost / victim.nthreads
                effects.workers[victim.address].append(
                    {"op": "steal-request", "key": ts.key, "stimulus_id": steal.stimulus_id}
                )
                effects.events.append(_event("steal-request", steal))
        return effects

    def steal_response(
        self, victim: str, key: str, worker_state: str | None, stimulus_id: str
    ) -> Effects:
        """``victim`` answered the steal request ``stimulus_id`` with the state ``key`` was in
        there; it gave the task back if that is one of ``GIVEN_BACK``."""
        effects = Effects()
        steal = _answered(self.in_flight, key, victim, stimulus_id)
        if steal is None:
            aborted = _answered(self.aborted, key, victim, stimulus_id)
            if aborted is not None:
                # the task left the victim after the request (finished, released, given back,
                # perhaps sent there again): whatever the answer, the steal is over
                effects.events.append(_event("steal-stale", aborted, worker_state=worker_state))
            return effects  # else a forged answer, or one to a steal of a victim since lost
        state = self.state
        if worker_state in GIVEN_BACK and steal.thief in state.running:
            action = "steal-confirm"
            effects = state.steal_task(key, victim, steal.thief, stimulus_id)
            self.confirmed += 1
        elif worker_state in GIVEN_BACK or worker_state in UNKNOWN:
            # given back, but the thief left or paused meanwhile: place it again
            action = "steal-reschedule"
            effects = state.reschedule(key, victim, stimulus_id)
        else:
            action = "steal-declined"  # it had started: the victim keeps it
        effects.events.append(_event(action, steal, worker_state=worker_state))
        return effects

    # ------------------------------------------------------------------ choices

    def remove_worker(self, address: str) -> None:
        """``address`` left: steals it was asked for will not be answered."""
        for key in [key for key, steal in self.aborted.items() if steal.victim == address]:
            del self.aborted[key]

    def _abort(self, key: str) -> None:
        """``key`` left ``processing`` (the state machine calls this): a steal of it that is
        still asked is over, as in Dask, so its answer cannot move a later assignment."""
        steal = self.in_flight.pop(key, None)
        if steal is not None:
            self.aborted[key] = steal

    def _idle(self, ws: WorkerInfo) -> bool:
        """A running worker with a thread that has, or soon has, nothing to run."""
        incoming = sum(1 for steal in self.in_flight.values() if steal.thief == ws.address)
        return len(ws.processing) - len(ws.long_running) + incoming < ws.nthreads

    def _room(self, ws: WorkerInfo) -> float:
        """How many tasks ``ws`` may take in one round: as many as it would be sent at once."""
        free = self.state._free_slots(ws)
        incoming = sum(1 for steal in self.in_flight.values() if steal.thief == ws.address)
        return min(free, ws.nthreads * 2) - incoming

    def _backlogged(self, ws: WorkerInfo) -> bool:
        """Has tasks waiting for a thread: more than its threads, or any at all if it is
        paused or retiring (it starts none of them)."""
        waiting = len(ws.processing) - len(ws.long_running)
        return waiting > (ws.nthreads if ws.status == "running" else 0)

    def _stealable(self, victim: WorkerInfo) -> Iterable[TaskState]:
        """``victim``'s tasks not known to have started, the last it would run first."""
        in_flight = self.in_flight
        candidates = [
            ts
            for ts in victim.processing
            if not ts.started and ts not in victim.long_running and ts.key not in in_flight
        ]
        candidates.sort(key=_rank, reverse=True)
        if victim.status == "running":
            # the first ``nthreads`` in run order are running or about to: not worth a request
            candidates = candidates[: max(0, len(candidates) - victim.nthreads)]
        return candidates

    def _plan(
        self,
        ts: TaskState,
        victim: WorkerInfo,
        thieves: list[WorkerInfo],
        loads: dict[str, float],
    ) -> Steal | None:
        allowed = [ws for ws in thieves if _may_run(ts, ws)]
        if not allowed and ts.loose and ts.resources is None:
            allowed = thieves  # restrictions that are only preferences
        if not allowed:
            return None
        compute = self.expected_duration(ts)
        if compute < MIN_DURATION:
            return None
        thief = min(allowed, key=lambda ws: loads[ws.address] + self.transfer_time(ts, ws))
        thief_cost = compute + self.transfer_time(ts, thief)
        victim_cost = compute + self.transfer_time(ts, victim)
        if loads[thief.address] + thief_cost > loads[victim.address] - victim_cost / 2:
            return None
        stimulus_id = f"steal-{next(self._ids)}"
        return Steal(ts.key, victim.address, thief.address, stimulus_id, thief_cost, victim_cost)


def _may_run(ts: TaskState, ws: WorkerInfo) -> bool:
    if ts.resources is not None and not suffices(ws.resources, ts.resources):
        return False
    restrictions = ts.restrictions
    return restrictions is None or ws.address in restrictions or ws.name in restrictions


def _answered(steals: dict[str, Steal], key: str, victim: str, stimulus_id: str) -> Steal | None:
    """The steal of ``steals`` that this answer is about, taken out; None if none is."""
    steal = steals.get(key)
    if steal is None or steal.stimulus_id != stimulus_id or steal.victim != victim:
        return None
    del steals[key]
    return steal


def _event(action: str, steal: Steal, **extra: Any) -> tuple[str, dict[str, Any]]:
    """An event for the record, under ``STEALING_TOPIC``."""
    return STEALING_TOPIC, {
        "action": action,
        "key": steal.key,
        "victim": steal.victim,
        "thief": steal.thief,
        "stimulus_id": steal.stimulus_id,
        **extra,
    }
