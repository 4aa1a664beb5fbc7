#!/usr/bin/env python3
"""Why the small reduction tree is bimodal: full collections in the client's process.

``bench/run --workloads tree`` (1,024 leaves, 2,047 tasks, a fraction of a second) is fast in
some runs and slow in others. This runs the same measurement, a fresh cluster per trial (2
worker processes x 1 thread, warmed up as bench/run does), and notes the garbage collector's
generation-2 (full) collections in the process that hosts the client and the LocalCluster's
scheduler while the tree runs, with their CPU time. Trials alternate between leaving the
collector alone (``gc``) and freezing what exists after the warm-up (``freeze``:
``gc.collect(); gc.freeze()``, which leaves those objects out of every later collection, as
storied's worker processes do with their start-up objects, ``storied.worker.collection``).

    .venv/bin/python bench/tree_gc.py --trials 10
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from workloads import FuturesBackend, cpu_seconds_apart, submit_tree

from storied import Client, LocalCluster

LEAVES = 1_024
MODES = ("gc", "freeze")


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


@contextmanager
def full_collections() -> Iterator[list[float]]:
    """CPU seconds of each full collection in this process while the block runs."""
    seconds: list[float] = []
    started = [0.0]

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        elif info["generation"] == 2:
            seconds.append(time.process_time() - started[0])

    gc.callbacks.append(note)
    try:
        yield seconds
    finally:
        gc.callbacks.remove(note)


def trial(mode: str) -> dict[str, Any]:
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        backend = FuturesBackend("storied", client)
        backend.gather(backend.map(inc, range(-8, 0)))
        if mode == "freeze":
            gc.collect()
            gc.freeze()
        try:
            with full_collections() as collections:
                cpu_before = cpu_seconds_apart()
                started = time.perf_counter()
                root, tasks = submit_tree(backend, LEAVES, inc, add)
                total = backend.result(root)
                elapsed = time.perf_counter() - started
                cpu_after = cpu_seconds_apart()
        finally:
            gc.unfreeze()
    if total != LEAVES * (LEAVES + 1) // 2:
        raise RuntimeError(f"the tree reduced to {total}")
    return {
        "mode": mode,
        "tasks_per_s": round(tasks / elapsed),
        "client_scheduler_cpu_us": round((cpu_after[0] - cpu_before[0]) / tasks * 1e6),
        "workers_cpu_us": round((cpu_after[1] - cpu_before[1]) / tasks * 1e6),
        "full_collections_ms": [round(s * 1000, 1) for s in collections],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="per mode")
    args = parser.parse_args()
    results = []
    for i in range(args.trials):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            result = trial(mode)
            print(json.dumps(result), flush=True)
            results.append(result)
    for mode in MODES:
        for collected in (True, False):
            runs = [
                r
                for r in results
                if r["mode"] == mode and bool(r["full_collections_ms"]) == collected
            ]
            if runs:
                print(
                    f"{mode}, {'with' if collected else 'without'} a full collection: "
                    f"{len(runs)} runs, median "
                    f"{statistics.median(r['tasks_per_s'] for r in runs):,.0f} tasks/s, "
                    f"{statistics.median(r['client_scheduler_cpu_us'] for r in runs)} us CPU "
                    "per task in the client's process"
                )


if __name__ == "__main__":
    main()
