"""What recording transitions costs a warm cluster: one cluster, recording switched on and off.

``bench/run`` compares storied with storied-norecord, each in a fresh process per measurement,
so start-up, caches and the machine's slow spells fall between the two. Here one cluster runs
map + gather of no-op tasks again and again, switching the scheduler's and the workers'
transition recording on and off between rounds (ABBA order), and reports the median of each
pair's throughput ratio. It reaches into the scheduler and the workers to switch, which no
user needs to do: this is a measurement, not an API.

    .venv/bin/python bench/record_ab.py --tasks 10000 --pairs 16
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from pairs import report_pairs

from storied import Client, LocalCluster
from storied.record import NoRecord


def noop(x: int) -> int:
    return x


def keep_transitions(keep: bool, dask_worker: Any = None) -> None:
    dask_worker._recorder.keep = keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--pairs", type=int, default=16, help="rounds with and without")
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        state = cluster.scheduler.state
        record = state.record
        client.gather(client.map(noop, range(-8, 0)))
        first = 0
        for pair in range(args.pairs):
            for on in (True, False) if pair % 2 == 0 else (False, True):
                client.run(keep_transitions, on)
                state.record = record if on else NoRecord()
                started = time.perf_counter()
                client.gather(client.map(noop, range(first, first + args.tasks)))
                rates[on].append(args.tasks / (time.perf_counter() - started))
                first += args.tasks
    report_pairs(
        f"{args.pairs} pairs of map({args.tasks:,}) in one warm cluster",
        rates,
        {True: "recording on ", False: "recording off"},
    )


if __name__ == "__main__":
    main()
