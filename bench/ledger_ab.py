"""What the durable ledger costs: two warm clusters, one with a ledger and one without, in turn.

``bench/run`` compares storied with storied-ledger in a fresh process per measurement, where a
busy machine's slow spells land on one system or the other. Here both clusters stay up and run
the same workload alternately (ABBA order), so drift hits both alike, and the figure is the
median of each pair's throughput ratio (ledger on / off). The idle cluster only sends
heartbeats. Each round with the ledger is timed twice: until its results came (what a user
waits for; ``bench/run`` measures this) and until the ledger has committed all of it and its
name index covers it (the writer process indexes names every ``ledger.index-interval``, so the
last of a round's names are written after its tasks). Either way the round ends with that
flush, so no backlog slows the next round. With ``--runs`` above 1, a round runs the workload
that many times in a row, as a busy cluster would, and the tail weighs less. Each round's CPU
is split three ways: this process's event loops and client (the ledger's thread taken out),
the ledger's thread and writer process, and the worker processes.

    .venv/bin/python bench/ledger_ab.py --workload tree --size 4096 --pairs 8 [--runs 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pairs import report_pairs
from workloads import cpu_seconds_apart

from storied import Client, LocalCluster


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def tree(client: Client, leaves: int) -> int:
    """Sum inc(i) over ``leaves`` leaves pairwise, as bench/workloads.py's tree; tasks run."""
    level = client.map(inc, range(leaves), pure=False)
    tasks = len(level)
    while len(level) > 1:
        pairs = [
            client.submit(add, level[i], level[i + 1], pure=False)
            for i in range(0, len(level) - 1, 2)
        ]
        tasks += len(pairs)
        level = pairs + level[len(pairs) * 2 :]
    if level[0].result() != leaves * (leaves + 1) // 2:
        raise RuntimeError("the tree summed wrong")
    return tasks


def map_inc(client: Client, size: int) -> int:
    client.gather(client.map(inc, range(size), pure=False))
    return size


WORKLOADS: dict[str, Callable[[Client, int], int]] = {"tree": tree, "map": map_inc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="tree")
    parser.add_argument("--size", type=int, default=4_096, help="leaves (tree) or tasks (map)")
    parser.add_argument("--pairs", type=int, default=8, help="rounds with and without")
    parser.add_argument("--runs", type=int, default=1, help="workload runs in a round")
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]

    def run(client: Client, size: int) -> int:
        return sum(workload(client, size) for _ in range(args.runs))

    #: tasks/s until the round's results came and the ledger committed and indexed it all,
    #: and until the results alone
    rates: dict[bool, list[float]] = {True: [], False: []}
    answer_rates: dict[bool, list[float]] = {True: [], False: []}
    tails: list[float] = []
    #: CPU seconds per round: process (writer taken out), writer, workers; and tasks
    spent: dict[bool, list[tuple[float, float, float, int]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        shape: dict[str, Any] = {
            "n_workers": 2,
            "threads_per_worker": 1,
            "dashboard_address": None,
        }
        with (
            LocalCluster(**shape, ledger=path) as on_cluster,
            LocalCluster(**shape) as off_cluster,
            Client(on_cluster, set_as_default=False) as on,
            Client(off_cluster, set_as_default=False) as off,
        ):
            ledger = on_cluster.scheduler.record._ledger
            assert ledger is not None
            tasks_on = run(on, 64)  # warm up
            run(off, 64)
            on_cluster.scheduler.record.flush()
            writer_before = ledger.writer_cpu_seconds
            for pair in range(args.pairs):
                for with_ledger in (True, False) if pair % 2 == 0 else (False, True):
                    started = time.perf_counter()
                    process, workers = cpu_seconds_apart()
                    writer = ledger.writer_cpu_seconds
                    writer_process = ledger.writer_process_cpu_seconds
                    tasks = run(on if with_ledger else off, args.size)
                    answered = time.perf_counter()
                    tasks_on += tasks if with_ledger else 0
                    if with_ledger:  # its backlog must not slow the next round
                        ledger.flush(indexed=True)
                    recorded = time.perf_counter()
                    rates[with_ledger].append(tasks / (recorded - started))
                    answer_rates[with_ledger].append(tasks / (answered - started))
                    tails.append(recorded - answered)
                    process_after, workers_after = cpu_seconds_apart()
                    writer = ledger.writer_cpu_seconds - writer
                    # the writer process is one of this process's children, as the workers are
                    writer_process = ledger.writer_process_cpu_seconds - writer_process
                    spent[with_ledger].append(
                        (
                            process_after - process - (writer - writer_process),
                            writer,
                            workers_after - workers - writer_process,
                            tasks,
                        )
                    )
            on_disk = sum(p.stat().st_size for p in Path(directory).iterdir())
            writer_cpu, written = ledger.writer_cpu_seconds - writer_before, ledger.written
    workload_runs = f"{args.workload}({args.size:,})" + (f" x {args.runs}" if args.runs > 1 else "")
    report_pairs(
        f"{args.pairs} pairs of {workload_runs}, two warm clusters in turn, timed until the "
        "ledger committed and indexed the round",
        rates,
        {True: "ledger on ", False: "ledger off"},
    )
    report_pairs(
        "the same rounds timed until their results came (the ledger's last "
        f"{statistics.median(tails) * 1e3:.0f} ms, median, off the clock)",
        answer_rates,
        {True: "ledger on ", False: "ledger off"},
    )
    print("  CPU us/task, median of rounds (on / off):")
    for index, part in enumerate(("client and scheduler loops", "ledger writer", "workers")):
        on_off = [
            statistics.median(cpu[index] / cpu[3] * 1e6 for cpu in spent[side])
            for side in (True, False)
        ]
        print(f"    {part}: {on_off[0]:.1f} / {on_off[1]:.1f}")
    print(
        f"  ledger writer (thread and process): {writer_cpu / tasks_on * 1e6:.1f} CPU us/task "
        f"({written / tasks_on:.1f} records/task); file and WAL: {on_disk / tasks_on:,.0f} B/task"
    )


if __name__ == "__main__":
    main()
