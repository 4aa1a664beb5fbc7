#!/usr/bin/env python3
"""What scheduler-side queuing costs a warm cluster end to end: one cluster, queuing on and off.

``bench/run --systems storied,storied-noqueue`` starts a fresh cluster per measurement, so
start-up and the machine's slow spells fall between the two. Here one cluster (2 worker
processes x 1 thread) runs ``map`` (no-op tasks + gather) or ``tree`` (a binary reduction over
leaf futures) round after round, switching the scheduler between its configured
``worker-saturation`` and ``inf`` (no queuing) between rounds, in ABBA order, and reports the
median of each pair's throughput ratio and of its ratio of CPU per task (every process: client
and scheduler, workers, nannies). It reaches into the scheduler to switch, which no user needs
to do: this is a measurement, not an API.

    .venv/bin/python bench/queue_ab.py --workload map --tasks 10000 --pairs 8
"""

from __future__ import annotations

import argparse
import math
import time

from pairs import report_cpu_pairs, report_pairs
from workloads import FuturesBackend, cpu_seconds_apart, submit_tree

from storied import Client, LocalCluster


def noop(x: int) -> int:
    return x


def add(a: int, b: int) -> int:
    return a + b


def run_map(client: Client, first: int, tasks: int) -> int:
    client.gather(client.map(noop, range(first, first + tasks)))
    return tasks


def run_tree(client: Client, first: int, tasks: int) -> int:
    """A reduction over ``tasks // 2`` leaves, as bench/run's ``tree``."""
    root, count = submit_tree(FuturesBackend("storied", client), tasks // 2, noop, add, first)
    root.result()
    return count


WORKLOADS = {"map": run_map, "tree": run_tree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="map")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--pairs", type=int, default=8, help="rounds with and without")
    args = parser.parse_args()
    run = WORKLOADS[args.workload]
    rates: dict[bool, list[float]] = {True: [], False: []}
    #: CPU us per task: (client and scheduler, workers)
    cpu: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        state = cluster.scheduler.state
        configured = state.worker_saturation
        first = -args.tasks
        run(client, first, args.tasks)  # warm-up: task durations known, code paths hot
        for pair in range(args.pairs):
            for queuing in (True, False) if pair % 2 == 0 else (False, True):
                state.worker_saturation = configured if queuing else math.inf
                first += args.tasks
                started, started_cpu = time.perf_counter(), cpu_seconds_apart()
                count = run(client, first, args.tasks)
                rates[queuing].append(count / (time.perf_counter() - started))
                spent = [b - a for a, b in zip(started_cpu, cpu_seconds_apart(), strict=True)]
                cpu[queuing].append((spent[0] / count * 1e6, spent[1] / count * 1e6))
    report_pairs(
        f"{args.pairs} pairs of {args.workload}({args.tasks:,}) in one warm cluster",
        rates,
        {True: f"worker-saturation {configured}", False: "worker-saturation inf"},
    )
    report_cpu_pairs(cpu, ("client and scheduler", "workers"))


if __name__ == "__main__":
    main()
