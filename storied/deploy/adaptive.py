"""Adaptive scaling of a LocalCluster (``cluster.adapt``), as Dask's ``Adaptive``.

Every ``interval`` the loop looks at the scheduler: tasks waiting for a worker (no-worker) or
more runnable tasks than threads ask for more workers, at once; workers idle for
``wait_count`` looks in a row go, through ``retire_workers`` so their data is kept. The
decision itself (``recommend``) is a pure function; every decision that changes something is
an ``adaptive`` event on the record, with why.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storied import config

if TYPE_CHECKING:
    from storied.deploy.local import LocalCluster

logger = logging.getLogger("storied.deploy")

#: the topics of adaptive's decisions
EVENT_TOPICS = ["all", "adaptive"]


@dataclass(frozen=True)
class Load:
    """What the scheduler has to do, as the adaptive loop sees it at one look."""

    #: tasks running or ready to run (processing)
    processing: int
    #: tasks that cannot run on any current worker
    no_worker: int
    #: worker address -> whether it runs nothing
    idle: dict[str, bool]
    #: worker address -> how many results it holds
    holding: dict[str, int]


def recommend(
    load: Load,
    threads_per_worker: int,
    minimum: int,
    maximum: float,
    idle_looks: dict[str, int],
    wait_count: int,
) -> tuple[int, list[str], str]:
    """``(target, workers to retire, why)``: grow to ``target`` when it exceeds the workers
    there are; otherwise retire the listed workers, each idle ``wait_count`` looks running."""
    workers = len(load.idle)
    demand = load.processing + load.no_worker
    wanted = math.ceil(demand / max(threads_per_worker, 1))
    if load.no_worker and not wanted:
        wanted = 1
    target = int(max(minimum, min(maximum, wanted)))
    if target > workers:
        return (
            target,
            [],
            (
                f"{load.processing} runnable and {load.no_worker} no-worker tasks for "
                f"{workers * threads_per_worker} threads"
            ),
        )
    if target < workers:
        ready = [a for a, n in sorted(idle_looks.items(), key=lambda i: -i[1]) if n >= wait_count]
        retire = ready[: workers - target]
        if len(retire) == workers and any(load.holding.values()):
            # the last worker keeps the results: retiring cannot move them anywhere
            retire.remove(max(retire, key=load.holding.__getitem__))
        if retire:
            return (
                workers - len(retire),
                retire,
                (f"idle for {wait_count} looks with {demand} tasks to run"),
            )
    return workers, [], "steady"


class Adaptive:
    """Resizes ``cluster`` between ``minimum`` and ``maximum`` workers while it runs."""

    def __init__(
        self,
        cluster: LocalCluster,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: float | str = "1s",
        wait_count: int = 3,
    ) -> None:
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise TypeError(f"minimum must be a non-negative int, not {minimum!r}")
        if isinstance(maximum, bool) or not isinstance(maximum, int | float) or maximum < minimum:
            raise TypeError(f"maximum must be a number of workers >= minimum, not {maximum!r}")
        if not isinstance(wait_count, int) or isinstance(wait_count, bool) or wait_count < 1:
            raise TypeError(f"wait_count must be a positive int, not {wait_count!r}")
        seconds = config.parse_timedelta(interval)
        if not seconds:
            raise ValueError(f"interval must be a positive duration, not {interval!r}")
        self.cluster = cluster
        self.minimum, self.maximum = minimum, maximum
        self.interval, self.wait_count = seconds, wait_count
        #: worker address -> how many looks in a row it has been idle
        self.idle_looks: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Adaptive minimum={self.minimum} maximum={self.maximum}>"

    def start(self) -> None:
        """On the cluster's loop."""
        self._task = asyncio.ensure_future(self._run())
        self._log({"action": "adapt", "minimum": self.minimum, "maximum": _plain(self.maximum)})

    def stop(self) -> None:
        """Stop adapting (the workers stay as they are); safe from any thread."""
        task = self._task
        if task is not None and not task.done():
            task.get_loop().call_soon_threadsafe(task.cancel)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.adapt()
            except Exception:  # one failed look (a worker died mid-retire) is not the end
                logger.exception("Adaptive scaling failed; trying again in %.1fs", self.interval)

    def load(self) -> Load:
        state = self.cluster.scheduler.state
        return Load(
            processing=state.processing_count(),
            no_worker=len(state.unrunnable),
            idle={address: not ws.processing for address, ws in state.workers.items()},
            holding={address: len(ws.has_what) for address, ws in state.workers.items()},
        )

    async def adapt(self) -> None:
        """One look: grow or shrink the cluster if the load asks for it."""
        load = self.load()
        self.idle_looks = {
            address: self.idle_looks.get(address, 0) + 1 if idle else 0
            for address, idle in load.idle.items()
        }
        target, retire, why = recommend(
            load,
            self.cluster.threads_per_worker,
            self.minimum,
            self.maximum,
            self.idle_looks,
            self.wait_count,
        )
        workers = len(load.idle)
        if target > workers:
            self._log({"action": "scale-up", "from": workers, "to": target, "why": why})
            await self.cluster._scale(target)
        elif retire:
            self._log(
                {
                    "action": "scale-down",
                    "from": workers,
                    "to": target,
                    "workers": retire,
                    "why": why,
                }
            )
            await self.cluster._retire(retire, requester="adaptive")
            for address in retire:
                self.idle_looks.pop(address, None)

    def _log(self, msg: dict[str, Any]) -> None:
        logger.info("Adaptive %s: %s", msg["action"], msg)
        self.cluster.scheduler.log_event(EVENT_TOPICS, msg)


def _plain(number: float) -> float | None:
    """``math.inf`` as None: events are msgpack, which has no infinity for ints."""
    return None if math.isinf(number) else number
