#!/usr/bin/env python3
"""Where one collection compute's time goes, end to end, read from storied's own record.

Starts a LocalCluster as bench/run does (2 worker processes x 1 thread, warmed up), computes
bench/run's ``dask_bag`` (or ``dask_array``, ``delayed``) ``--runs`` times, and prints for each
compute, in ms from the moment ``compute()`` was called: the client's graph conversion, when the
scheduler took the graph in and started and finished its tasks (the scheduler's story), each
worker's first and last task, how long its task thread was busy and idle between tasks (the
task stream), how much of that idle time came before a task that was ready on the worker already
(the worker's own hand-over from one task to the next), its transfers (the workers' stories),
and when the result was back.

    .venv/bin/python bench/timeline.py [--workload dask_bag] [--runs 3]

The first run is what bench/run measures (a fresh cluster); on a shared machine read the
shares and counts, not the rates.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import storied
from storied.graph import api


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def is_even(x: int) -> bool:
    return x % 2 == 0


def dask_bag() -> Any:
    import dask.bag as db

    return db.from_sequence(range(100_000), npartitions=100).map(inc).filter(is_even).sum()


def dask_array() -> Any:
    import dask.array as da

    x = da.random.random((3_200, 3_200), chunks=100)
    return (x + x.T).sum()


def delayed() -> Any:
    import dask

    level = [dask.delayed(inc)(i) for i in range(2_000)]
    while len(level) > 1:
        pairs = [dask.delayed(add)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + level[len(pairs) * 2 :]
    return level[0]


WORKLOADS: dict[str, Callable[[], Any]] = {
    "dask_bag": dask_bag,
    "dask_array": dask_array,
    "delayed": delayed,
}


class _Conversions:
    """Times ``to_tasks`` (the client's graph conversion) where ``submit_graph`` calls it."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, int]] = []
        self._convert = api.to_tasks
        api.to_tasks = self._timed  # type: ignore[assignment]

    def _timed(self, *args: Any, **kwargs: Any) -> Any:
        started = time.time()
        converted = self._convert(*args, **kwargs)
        self.spans.append((started, time.time(), len(converted.tasks)))
        return converted


def report(
    client: storied.Client, began: float, ended: float, converted: float, tasks: int
) -> None:
    def ms(moment: float) -> str:
        return f"{1000 * (moment - began):7.1f}"

    print(f"  client   converted {tasks} tasks by {ms(converted)}")
    keys = sorted({record["key"] for record in client.get_task_stream(start=began)})
    entries = [e for e in client.story(*keys) if e.timestamp >= began]
    scheduler = [e for e in entries if e.where == "scheduler"]
    received = min(e.timestamp for e in scheduler if e.start == "released")
    sent = [e.timestamp for e in scheduler if e.finish == "processing"]
    done = [e.timestamp for e in scheduler if e.finish == "memory"]
    print(
        f"  sched    graph in {ms(received)}, first task out {ms(min(sent))}, "
        f"last task done {ms(max(done))}"
    )
    transfers = collections.Counter(
        e.where for e in entries if e.where != "scheduler" and e.finish == "flight"
    )
    spans: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for record in client.get_task_stream(start=began):
        for span in record["startstops"]:
            spans[record["worker"]].append((span["start"], span["stop"], record["key"]))
    ready = {(e.where, e.key): e.timestamp for e in entries if e.finish == "ready"}
    for worker, runs in sorted(spans.items()):
        runs.sort()
        busy = sum(stop - start for start, stop, _ in runs)
        gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)] or [0.0]
        print(
            f"  {worker[-6:]:>7s}  {len(runs)} tasks {ms(runs[0][0])} .. {ms(runs[-1][1])}: "
            f"busy {1000 * busy:.1f} ms, between tasks median {1e6 * statistics.median(gaps):.0f}"
            f" us (sum {1000 * sum(gaps):.1f} ms), {transfers[worker]} inputs fetched"
        )
        # a gap before a task that was ready here before the previous one ended is the
        # worker's own hand-over; the others waited for the scheduler or an input
        handover = [
            start - previous_stop
            for (_, previous_stop, _), (start, _, key) in itertools.pairwise(runs)
            if ready.get((worker, key), start) <= previous_stop
        ]
        print(
            f"           of which {len(handover)} gaps (sum {1000 * sum(handover):.1f} ms) "
            "before a task ready here already"
        )
    print(f"  client   result by {ms(ended)}")


def wait_for_records(client: storied.Client, began: float, deadline_s: float = 5.0) -> None:
    """Until the workers' shipments of their records stop growing the task stream."""
    deadline = time.monotonic() + deadline_s
    seen = -1
    while time.monotonic() < deadline:
        count = len(client.get_task_stream(start=began))
        if count == seen:
            return
        seen = count
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="dask_bag")
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    conversions = _Conversions()
    with (
        storied.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        storied.Client(cluster) as client,
    ):
        client.gather(client.map(inc, range(-8, 0)))
        for run in range(options.runs):
            collection = WORKLOADS[options.workload]()
            began = time.time()
            collection.compute()
            ended = time.time()
            wait_for_records(client, began)
            print(f"run {run + 1}: {1000 * (ended - began):.1f} ms")
            _, converted, tasks = conversions.spans[-1]
            report(client, began, ended, converted, tasks)


if __name__ == "__main__":
    main()
