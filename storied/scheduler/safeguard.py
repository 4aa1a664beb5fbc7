"""Safeguard copies: a second copy of an intermediate result that would be costly to rebuild.

In a reduction, the few intermediate results that wait for their siblings stand for all the
work done so far: the inputs they were made from are released. When the one worker holding
such a result dies, its whole released subtree is computed again (Dask does the same), and a
death during that recomputation loses it once more. So when a result that dependents still
await would take at least ``min_lineage`` seconds of compute to rebuild, and copying it costs at
most ``1 / COPY_BUDGET`` of that, the scheduler asks a second worker to fetch a copy (the
``acquire-replicas`` message of ``Client.replicate``). The copy goes with the result, once its
dependents have it. Results only clients hold are never copied: persisted data would double.

Pure, like ``SchedulerState``: it reads the state and returns the message to send.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from storied.scheduler.state import TaskState, WorkerInfo

#: bytes per second assumed between workers (as work stealing assumes)
BANDWIDTH = 100e6
#: a copy is made only when rebuilding would cost at least this many times the transfer
COPY_BUDGET = 10
#: the prefix of the stimulus id of every safeguard copy (it shows in the workers' stories)
STIMULUS_PREFIX = "safeguard-copy"
#: the event topic of every copy asked for
SAFEGUARD_TOPIC = "safeguard-copy"


class SafeguardCopy(NamedTuple):
    """A copy to ask for: ``msg`` to the worker ``target``, ``event`` for the record."""

    target: str
    msg: dict[str, Any]
    event: dict[str, Any]


def lineage_seconds(ts: TaskState, duration: float) -> float:
    """Seconds of compute to rebuild ``ts`` from nothing: its own run and its inputs' (which
    are released once their dependents have run, so they would be rebuilt too)."""
    return duration + sum(dep.lineage for dep in ts.dependencies)


def safeguard_request(
    ts: TaskState, running: Mapping[str, WorkerInfo], min_lineage: float, stimulus_id: str
) -> SafeguardCopy | None:
    """The running worker that holds fewest results, asked to fetch a copy of ``ts``, if it
    is worth one; else None."""
    if not ts.waiters or ts.lineage < min_lineage or len(ts.who_has) != 1:
        return None
    if ts.nbytes / BANDWIDTH * COPY_BUDGET > ts.lineage:
        return None
    others = [ws for ws in running.values() if ws.address not in ts.who_has]
    if not others:
        return None
    target = min(others, key=lambda ws: (len(ws.has_what), ws.occupancy))
    holders = sorted(ts.who_has)
    copy_stimulus = f"{STIMULUS_PREFIX}-{stimulus_id}"
    msg = {"op": "acquire-replicas", "who_has": {ts.key: holders}, "stimulus_id": copy_stimulus}
    event = {
        "action": "safeguard-copy",
        "key": ts.key,
        "from": holders[0],
        "to": target.address,
        "lineage": ts.lineage,
        "nbytes": ts.nbytes,
        "stimulus_id": copy_stimulus,
    }
    return SafeguardCopy(target.address, msg, event)
