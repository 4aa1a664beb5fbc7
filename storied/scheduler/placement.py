"""Where root tasks go: beside their siblings, so the task that combines them needs no transfer.

A root task (no inputs) and its *siblings* (the other inputs of a task it feeds) are best
computed on one worker: ``x + x.T`` adds chunk ``(i, j)`` to chunk ``(j, i)``, and a delayed
tree adds leaf pairs. ``dask.order`` puts siblings next to each other, but two workers taking
roots in turn would split every pair and move one input of each. Dask's reference is its
``decide_worker`` and the co-assignment of root tasks; this is the same idea at small fan-in,
kept small so it never piles a whole graph onto one worker:

- only dependents with at most ``MAX_FAN_IN`` inputs make siblings (a reduction over many
  roots does not), and only the first ``MAX_DEPENDENTS`` dependents of a root are looked at;
- a root follows a sibling's worker only while that worker runs (``SchedulerState.running``:
  not paused or retiring) and is at most one task per thread
  busier than the least busy one (``beside``);
- a root popped from the scheduler's queue takes at most ``MAX_FAN_IN - 1`` of its queued
  siblings with it (``queued_siblings``), beyond the slot it fills.

Pure functions of scheduler state, no I/O: ``SchedulerState`` calls them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storied.scheduler.state import TaskState, WorkerInfo

#: a dependent with more inputs than this does not tie its inputs together
MAX_FAN_IN = 4
#: how many of a root's dependents are looked at for siblings
MAX_DEPENDENTS = 8


def _siblings(ts: TaskState) -> Iterator[TaskState]:
    """The other inputs of the first few of ``ts``'s small-fan-in dependents."""
    for dependent in itertools.islice(ts.dependents, MAX_DEPENDENTS):
        if len(dependent.dependencies) <= MAX_FAN_IN:
            for sibling in dependent.dependencies:
                if sibling is not ts:
                    yield sibling


def beside(
    ts: TaskState, workers: Mapping[str, WorkerInfo], least_busy: WorkerInfo
) -> WorkerInfo | None:
    """The worker computing or holding a sibling of root task ``ts``, if it is at most one
    task per thread busier than ``least_busy``; else None."""
    limit = least_busy.occupancy + 1
    for sibling in _siblings(ts):
        address = sibling.processing_on
        if address is None and sibling.who_has:
            address = next(iter(sibling.who_has))
        if address is not None:
            ws = workers.get(address)
            if ws is not None and ws.occupancy <= limit:
                return ws
    return None


def queued_siblings(ts: TaskState) -> list[TaskState]:
    """Siblings of ``ts`` waiting in the scheduler's queue, to go where ``ts`` goes (at most
    ``MAX_FAN_IN - 1``)."""
    if not ts.dependents:
        return []  # a map's task: no siblings, and this runs for every task popped
    queued = dict.fromkeys(s for s in _siblings(ts) if s.state == "queued")
    return list(itertools.islice(queued, MAX_FAN_IN - 1))
