#!/usr/bin/env python3
"""What scheduler-side queuing costs the scheduler itself: its state machine alone, with
queuing (the configured defaults) and without (``worker-saturation: inf``), side by side.

``SchedulerState`` is driven by hand as two one-thread workers would drive it: ``map`` (root
tasks) or ``tree`` (a binary reduction over root tasks) is submitted, and each worker reports
its tasks started and finished in the order it was sent them, a few at a time, while the
client releases each result. No sockets, so the figures are CPU time of the state machine,
best of the repeats, interleaved; ``batches`` counts the stimuli that sent a worker tasks
(each becomes one message on the wire, as a worker reports each finished task on its own).

    .venv/bin/python bench/queue_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import collections
import math
import time

from storied import config
from storied.record import Record
from storied.scheduler.state import Effects, SchedulerState, TaskSpec

WORKERS = ("tcp://w1", "tcp://w2")
FUNCTIONS = {"f": b"pickled"}
#: as the moving average settles for no-op tasks
TASK_SECONDS = 20e-6
#: finished tasks a worker reports before the other one does
REPORTED_AT_ONCE = 4


def graph(workload: str, size: int) -> list[TaskSpec]:
    roots = [TaskSpec(f"root-{i}", "f", b"") for i in range(size)]
    if workload == "map":
        return roots
    specs, level = list(roots), [ts.key for ts in roots]
    while len(level) > 1:
        pairs = [(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        combined = [
            TaskSpec(f"add-{len(specs) + j}", "f", b"", pair) for j, pair in enumerate(pairs)
        ]
        specs.extend(combined)
        level = [ts.key for ts in combined]
    return specs


def drive(workload: str, size: int, saturation: float) -> tuple[float, int]:
    """CPU seconds of the whole run, and how many stimuli sent a worker tasks."""
    backlog = config.parse_timedelta(config.get("scheduler.worker-backlog")) or 0.0
    state = SchedulerState(
        Record("scheduler"), worker_saturation=saturation, worker_backlog=backlog
    )
    for address in WORKERS:
        state.add_worker(address, address, 1, f"add-{address}")
    state.task_duration = TASK_SECONDS
    inboxes: dict[str, collections.deque[str]] = {
        address: collections.deque() for address in WORKERS
    }
    batches = 0

    def deliver(effects: Effects) -> None:
        nonlocal batches
        for address, msgs in effects.workers.items():
            keys = [msg["key"] for msg in msgs if msg["op"] == "compute-task"]
            batches += bool(keys)
            inboxes[address].extend(keys)

    specs = graph(workload, size)
    started = time.process_time()
    deliver(state.update_graph("client", specs, FUNCTIONS, [ts.key for ts in specs], "submit"))
    while any(inboxes.values()):
        for address, inbox in inboxes.items():
            for _ in range(min(REPORTED_AT_ONCE, len(inbox))):
                key = inbox.popleft()
                state.task_started(address, key)
                deliver(
                    state.task_finished(
                        address, key, 8, "int", f"done-{key}", startstops=(0.0, TASK_SECONDS)
                    )
                )
                deliver(state.client_releases_keys("client", [key], f"release-{key}"))
    spent = time.process_time() - started
    if state.tasks:
        raise RuntimeError(f"{len(state.tasks)} tasks never finished: the figures would lie")
    return spent, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    saturation = float(config.get("scheduler.worker-saturation"))
    for workload, size in (("map", 10_000), ("tree", 4_096)):
        seconds: dict[float, list[float]] = {saturation: [], math.inf: []}
        batches: dict[float, int] = {}
        for _ in range(options.repeats):
            for setting in seconds:
                spent, batches[setting] = drive(workload, size, setting)
                seconds[setting].append(spent)
        queued, unqueued = min(seconds[saturation]), min(seconds[math.inf])
        tasks = len(graph(workload, size))
        print(
            f"{workload} ({tasks:,} tasks): queuing {1e6 * queued / tasks:.1f} µs/task in "
            f"{batches[saturation]:,} batches, without {1e6 * unqueued / tasks:.1f} µs/task in "
            f"{batches[math.inf]:,}; ratio {queued / unqueued:.2f}"
        )


if __name__ == "__main__":
    main()
