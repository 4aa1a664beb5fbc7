#!/usr/bin/env python3
"""Where the time goes: py-spy samples of the scheduler's process and of one worker.

Runs repeated ``map`` + ``gather`` of no-op tasks (or a reduction tree, ``--workload tree``;
bench/run's ``dask_array`` and ``dask_bag`` computations; with ``--ledger``, recording to a
ledger file) on a LocalCluster (2 worker processes x 1 thread), samples the process that hosts
the client and scheduler and one worker process with py-spy, and prints each one's hottest
functions, by own samples and inclusive. ``--system dask`` profiles dask.distributed running
the same workload. The summary in docs/benchmarks.md comes from this script.

    .venv/bin/pip install py-spy && .venv/bin/python bench/profile.py [--seconds 5] [--ledger]

With ``--gil``, py-spy samples only the thread holding the GIL, and the summary says how the
GIL is shared between the event loop, the ledger's writer thread and the rest: what the
writer costs the loop, which CPU time alone does not tell.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import storied


def noop(x: int) -> int:
    return x


def add(a: int, b: int) -> int:
    return a + b


def run_map(client: Any) -> None:
    client.gather(client.map(noop, range(10_000)))


def run_tree(client: Any) -> None:
    """A binary reduction over 4,096 leaves, built from futures as bench/run's ``tree``."""
    level = client.map(noop, range(4_096))
    while len(level) > 1:
        level = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
    level[0].result()


def run_dask_array(client: Any) -> None:
    """bench/run's ``dask_array``: ``(x + x.T).sum()`` over 1,024 chunks of 100x100."""
    import dask.array as da

    x = da.random.random((3_200, 3_200), chunks=100)
    (x + x.T).sum().compute()


def run_dask_bag(client: Any) -> None:
    """bench/run's ``dask_bag``: 100 partitions of 1,000 elements, mapped, filtered, summed."""
    import dask.bag as db

    db.from_sequence(range(100_000), npartitions=100).map(noop).filter(is_even).sum().compute()


def is_even(x: int) -> bool:
    return x % 2 == 0


WORKLOADS = {
    "map": run_map,
    "tree": run_tree,
    "dask_array": run_dask_array,
    "dask_bag": run_dask_bag,
}


def py_spy() -> str | None:
    """py-spy from this venv, else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, gil: bool) -> subprocess.Popen[bytes]:
    """``gil``: sample only the thread holding the GIL (waiting for it is not work)."""
    return subprocess.Popen(
        [
            py_spy() or "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            *(["--gil"] if gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


_LINE = re.compile(r":\d+\)$")


def summarize(title: str, path: Path, top: int) -> None:
    """Own and inclusive samples per function, busy samples only (the loop's idle wait and
    idle executor threads are left out)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    idle = (
        "select", "_run_once", "LoopThread._run (", "_Executor._run (", "_serve (",
        "Condition.wait", "Popen._wait", "Event.wait", "Thread.join",
    )  # fmt: skip
    busy = 0
    threads: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        # per function, not per line: "name (path:line)" -> "name (path)"
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")[1:]]
        if not frames or frames[-1].startswith(idle):
            continue
        samples = int(count)
        busy += samples
        threads[_thread_of(stack)] += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"\n== {title}: {busy} busy samples")
    print("   " + ", ".join(f"{name} {100 * n / busy:.1f}%" for name, n in threads.most_common()))
    print("   own  function")
    for frame, samples in own.most_common(top):
        print(f"  {100 * samples / busy:4.1f}%  {frame}")
    print(" incl.  function")
    for frame, samples in inclusive.most_common(top * 2):
        if "storied" in frame:
            print(f"  {100 * samples / busy:4.1f}%  {frame}")


def _thread_of(stack: str) -> str:
    """Which of the threads worth telling apart a sampled stack is on."""
    if "Ledger._write_forever" in stack:
        return "ledger writer"
    if "LoopThread._run" in stack or "run_until_complete" in stack:
        return "event loop"
    return "other threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="map")
    parser.add_argument("--ledger", action="store_true", help="record to a ledger file too")
    parser.add_argument("--system", choices=["storied", "dask"], default="storied")
    parser.add_argument("--gil", action="store_true", help="only samples that hold the GIL")
    options = parser.parse_args()
    workload = WORKLOADS[options.workload]
    if py_spy() is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    folder = Path(tempfile.mkdtemp(prefix="storied-profile-"))
    cluster_options: dict[str, Any] = {"n_workers": 2, "threads_per_worker": 1}
    if options.system == "dask":
        import distributed as system

        cluster_options["dashboard_address"] = None
    else:
        system = storied
        cluster_options["ledger"] = str(folder / "ledger.db") if options.ledger else None
    with (
        system.LocalCluster(**cluster_options) as cluster,
        system.Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(1000)))
        worker_pid = next(iter(client.run(os.getpid).values()))
        running = True

        def load() -> None:
            while running:
                workload(client)

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(0.5)
        spies = [
            record(os.getpid(), options.seconds, folder / "scheduler.txt", options.gil),
            record(worker_pid, options.seconds, folder / "worker.txt", options.gil),
        ]
        for spy in spies:
            spy.wait(options.seconds + 30)
        running = False
        loader.join()
    summarize("client + scheduler process", folder / "scheduler.txt", options.top)
    summarize("one worker process", folder / "worker.txt", options.top)


if __name__ == "__main__":
    main()
