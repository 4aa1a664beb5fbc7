"""A/B of the shared-memory segment pool (``worker.shared-memory-pool``) in one warm cluster.

Run: ``.venv/bin/python bench/shm_pool_ab.py [--rounds 8] [--megabytes 100]``. Two worker
processes with shared memory on; each round makes a ``megabytes`` array on the first worker
(timed from submit to done, as ``bench/run``'s ``produce``), then has the second worker read it
(timed from submit to result: ``w2w``, the reader waiting for the write into segments), then
releases it; then a raw two-process TCP copy of as many bytes (``bench/workloads.py``'s), so
each round's handover is also a multiple of the raw copy at that moment. Rounds alternate pool
on and off in ABBA order (the pool is switched on the workers between rounds; off, it is
emptied), so drift on a busy machine hits both sides alike.
Prints each side's median and range, the median of paired ratios, how long the writes into
segments took (the ``shared`` events' ``seconds``) with how many went into pooled segments, and
the CPU of all processes per round (steadier than wall time on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy
import psutil
from workloads import raw_tcp_copy

from storied import Client, LocalCluster, config

MB = 10**6


def make_array(nbytes: int) -> Any:
    return numpy.full(nbytes, 1, dtype="u1")


def nbytes_of(value: Any) -> int:
    return int(value.nbytes)


def set_pool(bound: int, dask_worker: Any) -> None:
    pool = dask_worker.shared.pool
    pool.drain()
    pool.bound = bound


def shared_events(client: Client, key: str) -> list[dict[str, Any]]:
    return [
        msg
        for _, msg in client.get_events("transfer")
        if msg.get("action") == "shared" and msg.get("key") == key
    ]


def cluster_cpu_seconds() -> float:
    """CPU seconds of this process (client, scheduler) and its descendants (workers)."""
    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def one_round(client: Client, first: str, second: str, nbytes: int) -> tuple[float, float, dict]:
    started = time.perf_counter()
    made = client.submit(make_array, nbytes, workers=[first], pure=False)
    client.submit(nbytes_of, made, workers=[first], pure=False).result()
    produced = time.perf_counter() - started
    started = time.perf_counter()
    client.submit(nbytes_of, made, workers=[second], pure=False).result()
    moved = time.perf_counter() - started
    key = made.key
    deadline = time.monotonic() + 10
    while not (events := shared_events(client, key)) and time.monotonic() < deadline:
        time.sleep(0.01)
    del made
    # let the release reach both workers before the next round makes a result
    while client.run(lambda dask_worker: len(dask_worker.shared.keys))[first]:
        time.sleep(0.01)
    return produced, moved, events[0] if events else {}


def describe(name: str, values: list[float], unit: str) -> str:
    return (
        f"  {name}: median {statistics.median(values):,.1f} {unit} "
        f"({min(values):,.1f}-{max(values):,.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side")
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    nbytes = args.megabytes * MB
    bound = 2 * nbytes
    with (
        config.set({"worker.shared-memory": True}),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        first, second = sorted(client.scheduler_info()["workers"])[:2]
        results: dict[bool, list[tuple[float, float, dict]]] = {True: [], False: []}
        cpu = {True: 0.0, False: 0.0}
        #: each round's worker->worker rate over a raw TCP copy made right after it
        over_raw: dict[bool, list[float]] = {True: [], False: []}
        for side in (True, False):  # warm-up, one round each, not counted
            client.run(set_pool, bound if side else 0)
            one_round(client, first, second, nbytes)
        for index in range(2 * args.rounds):
            side = index % 4 in (0, 3)  # ABBA
            client.run(set_pool, bound if side else 0)
            if side:  # the pool's steady state: a segment released by the previous round
                one_round(client, first, second, nbytes)
            started_cpu = cluster_cpu_seconds()
            results[side].append(one_round(client, first, second, nbytes))
            cpu[side] += cluster_cpu_seconds() - started_cpu
            raw_rate, _ = raw_tcp_copy(nbytes)
            moved_rate = nbytes / MB / results[side][-1][1]
            over_raw[side].append(moved_rate / raw_rate)
        names = {True: "pool on ", False: "pool off"}
        for title, pick, unit, scale in (
            ("produce (submit to done), ms", 0, "ms", 1000.0),
            ("worker->worker right after, MB/s", 1, "MB/s", None),
        ):
            print(title)
            for side in (True, False):
                values = [
                    r[pick] * scale if scale else nbytes / MB / r[pick] for r in results[side]
                ]
                print(describe(names[side], values, unit))
            ratios = [on[pick] / off[pick] for on, off in zip(*results.values(), strict=True)]
            print(f"  on / off time, median of paired ratios: {statistics.median(ratios):.3f}")
        print("worker->worker over the raw TCP copy of the same moment (x)")
        for side in (True, False):
            print(describe(names[side], over_raw[side], "x"))
        print("writes into segments (the 'shared' events), ms")
        for side in (True, False):
            events = [r[2] for r in results[side] if r[2]]
            seconds = [event["seconds"] * 1000 for event in events]
            reused = sum(1 for event in events if event.get("reused"))
            print(describe(names[side], seconds, "ms") + f", {reused}/{len(events)} reused")
        print("CPU of all processes per round (make, move, release), ms")
        for side in (True, False):
            print(f"  {names[side]}: {cpu[side] / args.rounds * 1000:,.1f}")


if __name__ == "__main__":
    sys.exit(main())
