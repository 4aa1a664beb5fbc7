"""Does the scheduler's memory stay bounded by its configured in-memory log lengths?

Pushes ``--tasks`` tasks and ``--events`` events through a LocalCluster (two worker processes,
no ledger) and prints the resident memory of the scheduler's process (which also runs the
client) before, during and after. Each ``--limits TRANSITIONS,EVENTS`` pair
(scheduler.transition-log-length, scheduler.events-per-topic) runs in a fresh interpreter,
so one run's freed-but-kept memory does not blur the next. About 5 minutes with defaults.

    .venv/bin/python bench/memory_bound.py
    .venv/bin/python bench/memory_bound.py --tasks 20000 --events 100000 --limits 1000,1000
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import Any

import psutil

from storied import Client, LocalCluster, Scheduler, config

BATCH = 20_000
TOPICS = 10
MiB = 2**20


def inc(x: int) -> int:
    return x + 1


def rss() -> float:
    return psutil.Process().memory_info().rss / MiB


def history_sizes(dask_scheduler: Scheduler) -> dict[str, Any]:
    record = dask_scheduler.record
    return {
        "transitions_kept": len(record.transitions()),
        "executions_kept": len(record.executions()),
        "events_kept": sum(len(events) for events in record.events().values()),
        "events_logged": sum(record.event_counts().values()),
    }


def run_tasks(client: Client, n: int, samples: list[float]) -> None:
    """``n`` tasks in batches; each batch is gathered, checked and released."""
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        futures = client.map(inc, range(start, stop))
        assert sum(client.gather(futures)) == sum(range(start + 1, stop + 1))
        del futures
        samples.append(rss())


def log_events(client: Client, n: int, samples: list[float]) -> None:
    """``n`` small events spread over TOPICS topics, waiting for each batch to land."""
    for start in range(0, n, BATCH * 5):
        stop = min(start + BATCH * 5, n)
        for i in range(start, stop):
            client.log_event(f"bench-{i % TOPICS}", {"i": i})
        while client.run_on_scheduler(history_sizes)["events_logged"] < stop:
            time.sleep(0.05)
        samples.append(rss())


def measure(tasks: int, events: int, transition_log_length: int, events_per_topic: int) -> dict:
    """One configuration, in this process: what the scheduler's process holds, and when."""
    limits = {
        "scheduler.transition-log-length": transition_log_length,
        "scheduler.events-per-topic": events_per_topic,
    }
    with (
        config.set(limits),
        LocalCluster(n_workers=2, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        client.submit(inc, 0).result()
        gc.collect()
        before = rss()
        samples: list[float] = []
        started = time.perf_counter()
        run_tasks(client, tasks, samples)
        task_seconds = time.perf_counter() - started
        log_events(client, events, samples)
        gc.collect()
        after = rss()
        sizes = client.run_on_scheduler(history_sizes)
    return {
        "limits": f"{transition_log_length:,} / {events_per_topic:,}",
        "before": before,
        "peak": max(samples),
        "after": after,
        "tasks_per_second": tasks / task_seconds,
        **sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--limits",
        nargs="+",
        default=["1000,1000", "100000,100000"],
        help="TRANSITIONS,EVENTS_PER_TOPIC pairs, one run each",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child's single configuration
    args = parser.parse_args()
    if args.one:
        transitions, per_topic = map(int, args.one.split(","))
        print(json.dumps(measure(args.tasks, args.events, transitions, per_topic)))
        return

    print(f"{args.tasks:,} tasks, then {args.events:,} events over {TOPICS} topics")
    print(
        f"{'transition log / events per topic':>34} {'before':>8} {'peak':>8} {'after':>8}"
        f" {'kept transitions':>17} {'kept events':>12} {'kept executions':>16} {'tasks/s':>8}"
    )
    for limits in args.limits:
        command = [sys.executable, __file__, "--one", limits]
        command += ["--tasks", str(args.tasks), "--events", str(args.events)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.splitlines()[-1])
        print(
            f"{row['limits']:>34} {row['before']:>6.0f}Mi {row['peak']:>6.0f}Mi"
            f" {row['after']:>6.0f}Mi {row['transitions_kept']:>17,} {row['events_kept']:>12,}"
            f" {row['executions_kept']:>16,} {row['tasks_per_second']:>8,.0f}",
            flush=True,
        )
    print("RSS of the scheduler's process (it runs the client too); 'peak' is sampled per batch")


if __name__ == "__main__":
    main()
