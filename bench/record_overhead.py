"""What does recording one transition cost the scheduler, and how fast are lookups afterwards?

Times ``Record.transition`` on the life of a task as the scheduler records it (five transitions
per task, fresh recommendation dicts, stimulus ids shared as ``update-graph`` shares them), with
no ledger and with a ledger, then ``Record.story`` among 1,000,000 records. The arguments are
built before the clock starts and frozen out of the garbage collector's sight, so the figures
are the cost of the call alone, including the collections its own allocations cause; "net"
subtracts the same loop calling a function that does nothing. What a collection costs depends
on everything else the process holds, so the runs keep a scheduler-like heap alive (four
container objects per task in flight, ``--heap-tasks``).

    .venv/bin/python bench/record_overhead.py
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from storied.record import Ledger, Record

WORKER = "tcp://127.0.0.1:40000"
Call = tuple[str, str, str, dict[str, str], str, str | None]


def task_lives(tasks: int, first: int = 0) -> list[Call]:
    """The scheduler's five transitions of each of ``tasks`` tasks, interleaved as in a map."""
    calls: list[Call] = []
    batch = 1_000  # tasks submitted, finished and released together
    for low in range(first, first + tasks, batch):
        keys = [f"noop-{number:08x}" for number in range(low, min(low + batch, first + tasks))]
        graph, release = f"update-graph-{low}", f"client-releases-{low}"
        calls += [(k, "released", "waiting", {k: "processing"}, graph, None) for k in keys]
        calls += [(k, "waiting", "processing", {}, graph, WORKER) for k in keys]
        calls += [(k, "processing", "memory", {}, f"task-finished-{k}", WORKER) for k in keys]
        calls += [(k, "memory", "released", {k: "forgotten"}, release, None) for k in keys]
        calls += [(k, "released", "forgotten", {}, release, None) for k in keys]
    return calls


class TaskLike:
    """Stands for a scheduler's task state: a few containers the garbage collector walks."""

    __slots__ = ("dependencies", "dependents", "who_has")

    def __init__(self) -> None:
        self.dependencies: set[TaskLike] = set()
        self.dependents: set[TaskLike] = set()
        self.who_has: dict[str, int] = {}


def do_nothing(
    key: str,
    start: str,
    finish: str,
    recommendations: dict[str, str],
    stimulus_id: str,
    worker: str | None = None,
) -> None:
    return None


def seconds_per_call(transition: Callable[..., Any], calls: Sequence[Call]) -> tuple[float, float]:
    """Wall and calling-thread CPU seconds per call: they differ when another thread holds the
    GIL (the ledger's writer), and the calling thread is what the scheduler's event loop runs on."""
    started, started_cpu = time.perf_counter(), time.thread_time()
    for key, start, finish, recommendations, stimulus_id, worker in calls:
        transition(key, start, finish, recommendations, stimulus_id, worker)
    return (
        (time.perf_counter() - started) / len(calls),
        (time.thread_time() - started_cpu) / len(calls),
    )


def time_transitions(
    tasks: int, repeats: int, heap_tasks: int, new_record: Callable[[], Record]
) -> str:
    """Medians over ``repeats`` runs, each on a new Record, closed (and so flushed) after."""
    wall, cpu, net, closing = [], [], [], []
    for _ in range(repeats):
        calls = task_lives(tasks)
        gc.collect()
        gc.freeze()
        heap = [TaskLike() for _ in range(heap_tasks)]  # noqa: F841 (alive while timed)
        baseline, _ = seconds_per_call(do_nothing, calls)
        record = new_record()
        seconds, thread_seconds = seconds_per_call(record.transition, calls)
        started = time.perf_counter()
        record.close()
        closing.append(time.perf_counter() - started)
        gc.unfreeze()
        wall.append(seconds * 1e9)
        cpu.append(thread_seconds * 1e9)
        net.append((seconds - baseline) * 1e9)
    return (
        f"{statistics.median(wall):5.0f} ns per call ({statistics.median(net):5.0f} ns over a "
        f"do-nothing call; {statistics.median(cpu):5.0f} ns of the calling thread's CPU); "
        f"close() took {statistics.median(closing):.2f} s"
    )


def time_lookups(record: Record, names: list[str]) -> str:
    timings = []
    for name in names:
        started = time.perf_counter()
        story = record.story(name)
        timings.append((time.perf_counter() - started) * 1e6)
        assert story, name
    timings.sort()
    return (
        f"median {statistics.median(timings):.1f} us, "
        f"p99 {timings[int(len(timings) * 0.99) - 1]:.1f} us, max {timings[-1]:.1f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60_000, help="task lives per timing run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--heap-tasks", type=int, default=10_000, help="tasks held in flight")
    parser.add_argument("--n", type=int, default=1_000_000, help="records for the lookups")
    parser.add_argument("--lookups", type=int, default=2_000)
    args = parser.parse_args()
    calls = args.tasks * 5
    print(
        f"Record.transition, {calls:,} calls per run, median of {args.repeats} runs, "
        f"{args.heap_tasks:,} task-like objects on the heap:"
    )
    timing = partial(time_transitions, args.tasks, args.repeats, args.heap_tasks)
    print(f"  memory only:  {timing(Record)}")
    with tempfile.TemporaryDirectory(prefix="storied-bench-") as folder:
        ledgers: list[Ledger] = []

        def durable_record() -> Record:
            ledgers.append(Ledger(Path(folder) / "ledger.db", queue_size=calls))
            return Record(ledger=ledgers[-1])

        print(f"  with ledger:  {timing(durable_record)}")
        print(
            "                (close() waits for the writer to commit what is queued; "
            f"{sum(ledger.dropped for ledger in ledgers)} records dropped)"
        )

    record = Record(transition_log_length=args.n)
    tasks = args.n // 5
    for call in task_lives(tasks):
        record.transition(*call)
    picks = [f"noop-{random.randrange(tasks):08x}" for _ in range(args.lookups)]
    print(f"story lookups among {args.n:,} records ({args.lookups:,} each):")
    print(f"  by key:         {time_lookups(record, picks)}")
    print(f"  by stimulus id: {time_lookups(record, [f'task-finished-{k}' for k in picks])}")


if __name__ == "__main__":
    main()
