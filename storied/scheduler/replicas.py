"""Copies of results on several workers: the scheduler's side of ``Client.replicate`` and
``Client.rebalance``.

Workers report every copy they fetch or drop, so ``who_has`` is exact and the plans here are
plain arithmetic over it (pure functions, unit-tested alone). The extension asks workers to
fetch copies (``acquire-replicas``), waits until they report them, has a rebalance's senders
drop theirs, and records each call as an event under the ``replicas`` topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from storied.scheduler.state import SchedulerState, TaskState, WorkerInfo

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.scheduler.replicas")

#: how long a replicate or rebalance waits for the workers to report their new copies
COPY_TIMEOUT = 60.0
#: how often it looks while it waits
POLL_INTERVAL = 0.01

#: worker address -> key -> the workers holding it (an ``acquire-replicas`` message's body)
Fetches = dict[str, dict[str, list[str]]]
#: (key, the worker giving up its copy, the worker taking one)
Move = tuple[str, str, str]


def worker_pool(state: SchedulerState, workers: Iterable[str] | None) -> list[WorkerInfo]:
    """The workers named (all when None); ``ValueError`` names any the scheduler lacks."""
    if workers is None:
        return list(state.workers.values())
    addresses = list(workers)
    unknown = [a for a in addresses if a not in state.workers]
    if unknown:
        raise ValueError(f"unknown workers {unknown}: pass addresses of connected workers")
    return [state.workers[a] for a in dict.fromkeys(addresses)]


def in_memory(state: SchedulerState, keys: Iterable[str]) -> list[TaskState]:
    return [ts for key in keys if (ts := state.tasks.get(key)) is not None and ts.state == "memory"]


def plan_replicas(
    tasks: list[TaskState], n: int | None, pool: list[WorkerInfo]
) -> tuple[Fetches, dict[str, list[str]], int]:
    """Set each of ``tasks`` to be held by ``n`` workers of ``pool`` (None: all of them), as
    Dask does: which workers fetch which keys (those holding least take first), which drop
    their extra copies (those holding most), and the number of copies to expect."""
    wanted = len(pool) if n is None else min(n, len(pool))
    load = {ws.address: len(ws.has_what) for ws in pool}
    fetches: Fetches = {}
    drops: dict[str, list[str]] = {}
    for ts in tasks:
        holders = [a for a in load if a in ts.who_has]
        takers = sorted((a for a in load if a not in ts.who_has), key=load.__getitem__)
        for address in takers[: max(0, wanted - len(holders))]:
            fetches.setdefault(address, {})[ts.key] = sorted(ts.who_has)
            load[address] += 1
        extra = len(holders) - wanted
        for address in sorted(holders, key=load.__getitem__, reverse=True)[: max(0, extra)]:
            drops.setdefault(address, []).append(ts.key)
            load[address] -= 1
    return fetches, drops, wanted


def plan_rebalance(tasks: list[TaskState], pool: list[WorkerInfo]) -> list[Move]:
    """Moves that bring each worker's bytes of ``tasks`` towards the mean: the biggest keys
    of the fullest workers go to the emptiest, while a move narrows the gap between them."""
    if len(pool) < 2:
        return []
    addresses = {ws.address for ws in pool}
    load = dict.fromkeys(addresses, 0)
    held: dict[str, list[TaskState]] = {a: [] for a in addresses}
    for ts in tasks:
        for address in ts.who_has & addresses:
            load[address] += ts.nbytes
            held[address].append(ts)
    mean = sum(load.values()) / len(load)
    moves: list[Move] = []
    for sender in sorted(addresses, key=load.__getitem__, reverse=True):
        for ts in sorted(held[sender], key=lambda ts: ts.nbytes, reverse=True):
            if load[sender] <= mean:
                break
            candidates = [a for a in addresses if a not in ts.who_has]
            if not candidates:
                continue
            recipient = min(candidates, key=load.__getitem__)
            if load[recipient] + ts.nbytes >= load[sender]:
                continue
            moves.append((ts.key, sender, recipient))
            load[sender] -= ts.nbytes
            load[recipient] += ts.nbytes
    return moves


class ReplicasExtension:
    """Serves the ``replicate`` and ``rebalance`` requests."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {"replicate": self.replicate, "rebalance": self.rebalance}

    def remove_client(self, client: str) -> None:
        pass

    def remove_worker(self, address: str) -> None:
        pass

    async def replicate(
        self, client: str, keys: list[str], n: int | None = None, workers: list[str] | None = None
    ) -> dict[str, int]:
        """Copies of ``keys`` on ``n`` of ``workers``; returns how many each key reached."""
        if n is not None and n < 1:
            raise ValueError("replicate cannot delete every copy: n must be at least 1")
        state = self.scheduler.state
        pool = worker_pool(state, workers)
        tasks = in_memory(state, keys)
        fetches, drops, wanted = plan_replicas(tasks, n, pool)
        stimulus_id = f"replicate-{time.time()}"
        for address, dropped in drops.items():
            self.scheduler._apply(state.drop_replicas(address, dropped, stimulus_id))
        self._fetch(fetches, stimulus_id)
        await self._until(lambda: all(_replicated(state, t, pool, wanted) for t in tasks))
        reached = {ts.key: _held(ts, pool) for ts in tasks}
        copies = sum(len(f) for f in fetches.values())
        logger.info("Client %s replicates %d keys: %d copies asked for", client, len(tasks), copies)
        self.scheduler.log_event(
            "replicas",
            {
                "action": "replicate",
                "client": client,
                "keys": len(tasks),
                "n": n,
                "copies-asked": copies,
                "copies-dropped": sum(len(d) for d in drops.values()),
                "held": reached,
                "stimulus_id": stimulus_id,
            },
        )
        return reached

    async def rebalance(
        self, client: str, keys: list[str] | None = None, workers: list[str] | None = None
    ) -> dict[str, Any]:
        """Move copies of ``keys`` (None: all in memory) between ``workers`` to even out their
        bytes; returns the moves made."""
        state = self.scheduler.state
        pool = worker_pool(state, workers)
        tasks = in_memory(state, state.tasks if keys is None else keys)
        moves = plan_rebalance(tasks, pool)
        stimulus_id = f"rebalance-{time.time()}"
        fetches: Fetches = {}
        for key, _, recipient in moves:
            fetches.setdefault(recipient, {})[key] = sorted(state.tasks[key].who_has)
        self._fetch(fetches, stimulus_id)
        await self._until(lambda: all(_arrived(state, move) for move in moves))
        done = [move for move in moves if _arrived(state, move)]
        for key, sender, _ in done:
            self.scheduler._apply(state.drop_replicas(sender, [key], stimulus_id))
        logger.info("Client %s rebalances: %d of %d moves made", client, len(done), len(moves))
        self.scheduler.log_event(
            "replicas",
            {
                "action": "rebalance",
                "client": client,
                "moves": [list(move) for move in done],
                "planned": len(moves),
                "stimulus_id": stimulus_id,
            },
        )
        return {"moves": [list(move) for move in done], "planned": len(moves)}

    def _fetch(self, fetches: Fetches, stimulus_id: str) -> None:
        for address, who_has in fetches.items():
            link = self.scheduler.workers.get(address)
            if link is not None:
                msg = {"op": "acquire-replicas", "who_has": who_has, "stimulus_id": stimulus_id}
                link.stream.send(msg)

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` or ``COPY_TIMEOUT`` (a worker may leave before it reports)."""
        deadline = time.monotonic() + COPY_TIMEOUT
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL)


def _held(ts: TaskState, pool: list[WorkerInfo]) -> int:
    return sum(ws.address in ts.who_has for ws in pool)


def _replicated(state: SchedulerState, ts: TaskState, pool: list[WorkerInfo], n: int) -> bool:
    """``ts`` has its ``n`` copies, or as many as the workers still here (or it is gone)."""
    present = sum(state.workers.get(ws.address) is ws for ws in pool)
    return ts.state != "memory" or _held(ts, pool) >= min(n, present)


def _arrived(state: SchedulerState, move: Move) -> bool:
    """The recipient reported its copy (or the key is gone, so there is nothing to wait for)."""
    key, _, recipient = move
    ts = state.tasks.get(key)
    return ts is None or ts.state != "memory" or recipient in ts.who_has
