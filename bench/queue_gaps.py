#!/usr/bin/env python3
"""Where queuing's time goes on a warm cluster: workers' idle gaps, and messages each way.

One cluster (2 worker processes x 1 thread) runs ``map`` of no-op tasks round after round,
the scheduler switched between its configured ``worker-saturation`` and ``inf`` (no queuing)
between rounds, ABBA, as ``bench/queue_ab.py``. For each mode it prints:

- a histogram of each worker thread's gaps: from the end of one task to the start of its next
  (the scheduler's record of executions, as the workers timed them): a worker that waits for
  a refill shows a long gap, the loop round trip between two tasks a short one;
- messages and writes per task each way (scheduler to workers, workers to scheduler), counted
  on each side's batched streams.

It reaches into the scheduler and the workers to count, which no user needs to do: this is a
measurement, not an API.

    .venv/bin/python bench/queue_gaps.py [--tasks 10000] [--pairs 4]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gc
import itertools
import math
import statistics
import threading
import time
from typing import Any

import psutil
from pairs import report_cpu_pairs, report_pairs
from workloads import cpu_seconds_apart

from storied import Client, LocalCluster

#: gap bucket bounds, seconds
BOUNDS = (25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 20e-3)


def noop(x: int) -> int:
    return x


def stream_counts(stream: Any) -> tuple[int, int]:
    """Messages and writes a batched stream has sent (writes counted by ``count_writes``)."""
    batched = stream.batched
    return batched.sent_messages, getattr(batched, "writes_counted", 0)


def count_writes(stream: Any) -> None:
    """Count the writes of ``stream``'s batched sender from now on (once per stream)."""
    batched = stream.batched
    if hasattr(batched, "writes_counted"):
        return
    batched.writes_counted = 0
    write = batched._write

    def counted(batch: list[Any]) -> None:
        batched.writes_counted += 1
        write(batch)

    batched._write = counted


def worker_counts(dask_worker: Any = None) -> tuple[int, int]:
    """Run on a worker (``client.run``): its stream to the scheduler's counts."""
    count_writes(dask_worker.stream)
    return stream_counts(dask_worker.stream)


def scheduler_counts(scheduler: Any) -> tuple[int, int]:
    messages = writes = 0
    for link in scheduler.workers.values():
        count_writes(link.stream)
        sent, written = stream_counts(link.stream)
        messages, writes = messages + sent, writes + written
    return messages, writes


def workers_total(client: Client) -> tuple[int, int]:
    counts = client.run(worker_counts).values()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def idle_spans(executions: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each worker thread's spans between the end of a task and the start of its next."""
    by_thread: dict[tuple[str, int], list[tuple[float, float]]] = collections.defaultdict(list)
    for run in executions:
        by_thread[run["worker"], run["thread"]].append((run["start"], run["stop"]))
    spans = []
    for runs in by_thread.values():
        runs.sort()
        spans.extend((before[1], after[0]) for before, after in itertools.pairwise(runs))
    return spans


def gaps_of(executions: list[dict[str, Any]]) -> list[float]:
    """The lengths of ``idle_spans``."""
    return [stop - start for start, stop in idle_spans(executions)]


def histogram(gaps: list[float]) -> list[int]:
    counts = [0] * (len(BOUNDS) + 1)
    for gap in gaps:
        counts[bisect.bisect_left(BOUNDS, gap)] += 1
    return counts


def label(index: int) -> str:
    def us(seconds: float) -> str:
        return f"{seconds * 1e6:,.0f}us"

    if index == 0:
        return f"<{us(BOUNDS[0])}"
    if index == len(BOUNDS):
        return f">={us(BOUNDS[-1])}"
    return f"{us(BOUNDS[index - 1])}-{us(BOUNDS[index])}"


def thread_cpu(native_id: int) -> float:
    """CPU seconds of this process's thread ``native_id`` so far."""
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    raise LookupError(f"no thread {native_id} in this process")


def loop_thread_id() -> int:
    """The native id of the event loop thread the client and the scheduler share."""
    for thread in threading.enumerate():
        if thread.name == "storied-loop" and thread.native_id is not None:
            return thread.native_id
    raise LookupError("no storied-loop thread")


class CollectionClock:
    """Seconds this process spends in the garbage collector's full collections, and how many."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.count = 0
        #: (start, stop) of each full collection, wall-clock (as the workers time tasks)
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.time()
        else:
            stop = time.time()
            self.seconds += stop - self._started
            self.count += 1
            self.pauses.append((self._started, stop))


def idle_in_pauses(executions: list[dict[str, Any]], pauses: list[tuple[float, float]]) -> float:
    """Seconds worker threads spent between tasks while this process was collecting."""
    return sum(
        max(0.0, min(stop, gap_stop) - max(start, gap_start))
        for gap_start, gap_stop in idle_spans(executions)
        for start, stop in pauses
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    gaps: dict[bool, list[float]] = {True: [], False: []}
    tasks: dict[bool, int] = {True: 0, False: 0}
    to_workers: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    from_workers: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    idle: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    #: seconds of each round: before the first task starts, and after the last one stops
    ends: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    #: full collections in this process (client and scheduler): (count, seconds) per round
    collections_of: dict[bool, list[tuple[int, float]]] = {True: [], False: []}
    #: seconds worker threads idled while this process collected, per round
    stalled: dict[bool, list[float]] = {True: [], False: []}
    clock = CollectionClock()
    #: CPU us per task: (the shared loop thread of client and scheduler, workers)
    cpu: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        scheduler = cluster.scheduler
        state = scheduler.state
        configured = state.worker_saturation
        first = -args.tasks
        client.gather(client.map(noop, range(first, first + args.tasks)))  # warm-up
        loop_thread = loop_thread_id()
        for pair in range(args.pairs):
            for queuing in (True, False) if pair % 2 == 0 else (False, True):
                state.worker_saturation = configured if queuing else math.inf
                first += args.tasks
                since = scheduler.record.executions_recorded
                sent, received = scheduler_counts(scheduler), workers_total(client)
                loop_cpu, workers_cpu = thread_cpu(loop_thread), cpu_seconds_apart()[1]
                counted, collecting = clock.count, clock.seconds
                clock.pauses.clear()
                started, wall = time.perf_counter(), time.time()
                client.gather(client.map(noop, range(first, first + args.tasks)))
                elapsed = time.perf_counter() - started
                cpu[queuing].append(
                    (
                        (thread_cpu(loop_thread) - loop_cpu) / args.tasks * 1e6,
                        (cpu_seconds_apart()[1] - workers_cpu) / args.tasks * 1e6,
                    )
                )
                rates[queuing].append(args.tasks / elapsed)
                collections_of[queuing].append((clock.count - counted, clock.seconds - collecting))
                after_sent, after_received = scheduler_counts(scheduler), workers_total(client)
                runs = scheduler.record.executions(since)
                if len(runs) != args.tasks:
                    raise RuntimeError(f"{len(runs)} executions recorded for {args.tasks} tasks")
                round_gaps = gaps_of(runs)
                stalled[queuing].append(idle_in_pauses(runs, clock.pauses))
                ends[queuing].append(
                    (
                        min(run["start"] for run in runs) - wall,
                        wall + elapsed - max(run["stop"] for run in runs),
                    )
                )
                gaps[queuing].extend(round_gaps)
                # the fraction of the round the workers' threads were not running a task
                busy = sum(run["stop"] - run["start"] for run in runs)
                idle[queuing].append(1 - busy / (2 * elapsed))
                tasks[queuing] += args.tasks
                for totals, before, after in (
                    (to_workers[queuing], sent, after_sent),
                    (from_workers[queuing], received, after_received),
                ):
                    totals[0] += after[0] - before[0]
                    totals[1] += after[1] - before[1]
    report_pairs(
        f"{args.pairs} pairs of map({args.tasks:,}) in one warm cluster",
        rates,
        {True: f"worker-saturation {configured}", False: "worker-saturation inf"},
    )
    report_cpu_pairs(cpu, ("client and scheduler loop thread", "workers"))
    for queuing in (True, False):
        name = f"worker-saturation {configured}" if queuing else "worker-saturation inf"
        spread = gaps[queuing]
        print(f"{name}: {tasks[queuing]:,} tasks in {args.pairs} rounds")
        print(
            f"  gaps: median {statistics.median(spread) * 1e6:.0f}us, mean "
            f"{statistics.mean(spread) * 1e6:.0f}us, total {sum(spread):.3f}s; threads idle "
            f"{statistics.median(idle[queuing]):.1%} of each round (median)"
        )
        first_start = statistics.median(e[0] for e in ends[queuing])
        last_stop = statistics.median(e[1] for e in ends[queuing])
        print(
            f"  round: first task starts {first_start * 1e3:.1f} ms in, the last one stops "
            f"{last_stop * 1e3:.1f} ms before the end (medians)"
        )
        full = collections_of[queuing]
        print(
            f"  client and scheduler process: {sum(c for c, _ in full) / len(full):.1f} full "
            f"collections a round, {sum(t for _, t in full) / len(full) * 1e3:.1f} ms (means); "
            f"worker threads idle meanwhile {statistics.mean(stalled[queuing]) * 1e3:.1f} ms "
            "a round"
        )
        counts = histogram(spread)
        print("  " + ", ".join(f"{label(i)} {n}" for i, n in enumerate(counts) if n))
        n = tasks[queuing]
        print(
            f"  per task: scheduler->workers {to_workers[queuing][0] / n:.3f} msgs in "
            f"{to_workers[queuing][1] / n:.4f} writes; workers->scheduler "
            f"{from_workers[queuing][0] / n:.3f} msgs in {from_workers[queuing][1] / n:.4f} writes"
        )


if __name__ == "__main__":
    main()
