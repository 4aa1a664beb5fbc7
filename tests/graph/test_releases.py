"""A graph's intermediate results leave the workers once used, each release on the worker's
record under the stimulus the scheduler released it with, also where the scheduler merged a
batch's releases to one worker into one message (``storied.scheduler.coalesce``; the merging
itself is unit-tested in tests/scheduler/test_coalesce.py)."""

from __future__ import annotations

import operator
import time
import uuid
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from storied import Client

DEADLINE_S = 20.0
#: the stimulus of a worker dropping a freed input once the task using it is done
LOCAL = "inputs-done"


def inc(x: int) -> int:
    return x + 1


def tree(name: str, leaves: int) -> tuple[dict[Any, Any], Any]:
    """A pairwise sum over ``leaves`` inc tasks, and its final key."""
    dsk: dict[Any, Any] = {(name, 0, i): (inc, i) for i in range(leaves)}
    level, width = 0, leaves
    while width > 1:
        for i in range(width // 2):
            dsk[(name, level + 1, i)] = (
                operator.add,
                (name, level, 2 * i),
                (name, level, 2 * i + 1),
            )
        level, width = level + 1, width // 2
    return dsk, (name, level, 0)


def held(client: Client, keys: set[str]) -> set[str]:
    return {key for worker_keys in client.has_what().values() for key in worker_keys} & keys


def test_workers_drop_intermediates_under_the_stimulus_the_scheduler_released_them_with(
    client: Client,
) -> None:
    leaves = 256
    dsk, final = tree(f"release-{uuid.uuid4().hex}", leaves)
    first, second = sorted(client.scheduler_info()["workers"])
    # the leaves on one worker, the sums on the other: each finished sum frees two leaves
    # there, and sums finishing together free theirs in one batch
    layers = {
        "leaves": MaterializedLayer(
            {k: v for k, v in dsk.items() if k[1] == 0}, annotations={"workers": first}
        ),
        "sums": MaterializedLayer(
            {k: v for k, v in dsk.items() if k[1] != 0}, annotations={"workers": second}
        ),
    }
    graph = HighLevelGraph(layers, {"leaves": set(), "sums": {"leaves"}})
    assert client.get(graph, final) == sum(range(1, leaves + 1))
    intermediates = {str(key) for key in dsk if key != final}
    deadline = time.monotonic() + DEADLINE_S
    while held(client, intermediates):
        assert time.monotonic() < deadline, "workers still hold intermediate results"
        time.sleep(0.05)
    entries = client.story(*intermediates)
    released_by_scheduler: dict[str, set[str]] = {}
    for entry in entries:
        if entry["where"] == "scheduler" and entry["start"] == "memory":
            released_by_scheduler.setdefault(entry["key"], set()).add(entry["stimulus_id"])
    worker_releases = [
        (entry["key"], entry["stimulus_id"])
        for entry in entries
        if entry["where"] != "scheduler" and entry["start"] == "memory"
    ]
    assert {key for key, _ in worker_releases} == intermediates
    # a worker keeps a freed input until the task using it there is done ("inputs-done")
    told = [(key, stimulus_id) for key, stimulus_id in worker_releases if stimulus_id != LOCAL]
    assert told
    for key, stimulus_id in told:
        assert stimulus_id in released_by_scheduler[key], (key, stimulus_id)
