"""What shared memory costs a result that never moves: two warm clusters, shared memory off and
on, paired rounds.

Run: ``.venv/bin/python bench/shm_default_ab.py [--rounds 8] [--megabytes 100]``. Two clusters
of two worker processes (one thread each) run side by side, one with ``worker.shared-memory``
false, one true; rounds alternate between them in ABBA order, so drift on a busy machine hits
both alike. Each round, on one worker:

- ``make``: a ``megabytes`` array is made and not moved (timed from submit to done); the round
  ends once the worker has no write into segments under way (shared memory is written when a
  reader of the host asks, so none should start), so the CPU counted would include one, then
  it is released;
- ``chain``: 20 tasks, each consuming its predecessor's array and making one of 10-50 MB
  (timed from the first submit to the last result done; the client holds only the last).

Per round: the time, the CPU of this process (client, scheduler) and of the cluster's worker
processes, the worker's peak RSS (``VmHWM``, reset before the round through
``/proc/<pid>/clear_refs``, which needs the right to write there) and, for ``make`` once the
round is over, what the worker holds: private memory (``RssAnon``) and its segments in
``/dev/shm`` (pooled ones included), to check that a result in segments is not held twice.
Prints medians with ranges and the median of paired on/off ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy
import psutil

from storied import Client, LocalCluster, config, wait
from storied.shm import segments

MB = 10**6
CHAIN_LENGTH = 20
CHAIN_SIZES_MB = (10, 30, 50, 20, 40)


def make_array(nbytes: int) -> Any:
    return numpy.full(nbytes, 1, dtype="u1")


def next_array(previous: Any, nbytes: int) -> Any:
    """Consume ``previous`` (read all of it) and make a new array."""
    return numpy.full(nbytes, int(previous.sum(dtype="u8")) % 251, dtype="u1")


def status_fields(pid: int) -> dict[str, int]:
    """``/proc/<pid>/status``'s memory fields, bytes."""
    found = {}
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                found[name] = int(value.split()[0]) * 1024
    return found


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/clear_refs", "w") as file:
        file.write("5")


class Side:
    """One warm cluster and the figures of its rounds."""

    def __init__(self, shared_memory: bool, stack: contextlib.ExitStack) -> None:
        self.shared_memory = shared_memory
        with config.set({"worker.shared-memory": shared_memory}):
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
                )
            )
        self.client = stack.enter_context(Client(cluster))
        info = self.client.scheduler_info()["workers"]
        self.worker = sorted(info)[0]
        self.pid = info[self.worker]["pid"]
        self.processes = [psutil.Process(), *(psutil.Process(w["pid"]) for w in info.values())]
        self.figures: dict[str, list[float]] = {}

    def cpu_seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def wait_settled(self) -> None:
        """Until the worker has no write into segments under way (none starts before a reader
        of the host asks: results are written lazily), so the CPU counted includes any."""
        deadline = time.monotonic() + 30
        while self.client.run(
            lambda dask_worker: dask_worker.shared.writing, workers=[self.worker]
        )[self.worker]:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker still writes into segments after 30 s")
            time.sleep(0.005)

    def wait_released(self) -> None:
        deadline = time.monotonic() + 30
        while self.client.run(lambda dask_worker: len(dask_worker.data), workers=[self.worker])[
            self.worker
        ]:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker still holds results after 30 s")
            time.sleep(0.005)

    def make_round(self, nbytes: int) -> None:
        reset_peak(self.pid)
        cpu = self.cpu_seconds()
        started = time.perf_counter()
        made = self.client.submit(make_array, nbytes, workers=[self.worker], pure=False)
        wait([made])
        self.add("make: submit to done, ms", (time.perf_counter() - started) * 1000)
        self.wait_settled()
        status = status_fields(self.pid)
        self.add("make: CPU of all processes per 100 MB, ms", self.per_100mb(cpu, nbytes))
        self.add("make: worker peak RSS, MB", status["VmHWM"] / MB)
        self.add("make: worker private memory after, MB", status["RssAnon"] / MB)
        self.add("make: worker segments after (pool too), MB", segments.bytes_of(self.pid) / MB)
        del made
        self.wait_released()

    def chain_round(self) -> None:
        reset_peak(self.pid)
        cpu = self.cpu_seconds()
        total = 0
        started = time.perf_counter()
        current = self.client.submit(make_array, CHAIN_SIZES_MB[0] * MB, workers=[self.worker])
        for index in range(1, CHAIN_LENGTH):
            nbytes = CHAIN_SIZES_MB[index % len(CHAIN_SIZES_MB)] * MB
            total += nbytes
            current = self.client.submit(
                next_array, current, nbytes, workers=[self.worker], pure=False
            )
        wait([current])
        self.add("chain: submit to last done, ms", (time.perf_counter() - started) * 1000)
        self.wait_settled()
        self.add("chain: CPU of all processes per task, ms", self.per_task(cpu))
        self.add("chain: worker peak RSS, MB", status_fields(self.pid)["VmHWM"] / MB)
        del current
        self.wait_released()

    def per_100mb(self, cpu_before: float, nbytes: int) -> float:
        return (self.cpu_seconds() - cpu_before) * 1000 * 100 * MB / nbytes

    def per_task(self, cpu_before: float) -> float:
        return (self.cpu_seconds() - cpu_before) * 1000 / CHAIN_LENGTH


def describe(values: list[float]) -> str:
    return f"{statistics.median(values):9,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def report(off: Side, on: Side) -> None:
    print(f"{'figure':48} {'shared memory off':>26} {'on':>26}  on/off (median of pairs)")
    for name, values in off.figures.items():
        pairs = [b / a for a, b in zip(values, on.figures[name], strict=True) if a]
        ratio = f"{statistics.median(pairs):.2f}" if pairs else "-"
        print(f"{name:48} {describe(values):>26} {describe(on.figures[name]):>26}  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per side")
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        sides = {False: Side(False, stack), True: Side(True, stack)}
        rounds: list[Callable[[Side], None]] = [
            lambda side: side.make_round(args.megabytes * MB),
            Side.chain_round,
        ]
        for side in sides.values():  # warm-up, not counted
            for one_round in rounds:
                one_round(side)
            side.figures.clear()
        for index in range(2 * args.rounds):
            side = sides[index % 4 in (0, 3)]  # ABBA
            for one_round in rounds:
                one_round(side)
        report(sides[False], sides[True])
        print(f"load average at the end: {psutil.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
