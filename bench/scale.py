#!/usr/bin/env python3
"""How per-task overhead and scheduler memory scale: map + gather of 10^4, 10^5, 10^6 tasks.

Runs storied alone (Dask needs hours for 10^6 here), with the scheduler in its own process
(`storied scheduler`) so its RSS is the scheduler's, not the client's. Prints, per size:
tasks/s, microseconds per task, and the scheduler's RSS before, at the end of the run and
after the futures are released: per-task cost at 10^6 should stay within 1.5x of 10^4, and
memory should come back to a plateau set by the bounded in-memory logs, not grow with tasks.

    .venv/bin/python bench/scale.py [--sizes 10000,100000,1000000] [--chunk 100000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

import psutil

from storied import Client


def noop(x: int) -> int:
    return x


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STORIED_AUTH_TOKEN": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "storied", *args], env=env, stderr=subprocess.DEVNULL
    )


def run(client: Client, size: int, chunk: int) -> float:
    """Map + gather ``size`` tasks, ``chunk`` at a time; the seconds it took."""
    began = time.perf_counter()
    for first in range(0, size, chunk):
        futures = client.map(noop, range(first, min(first + chunk, size)))
        results = client.gather(futures)
        assert results[-1] == min(first + chunk, size) - 1
        del futures, results
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--chunk", type=int, default=100_000, help="tasks per map call")
    options = parser.parse_args()
    port = free_port()
    scheduler = start("scheduler", "--port", str(port), "--no-ledger")
    workers = [start("worker", f"tcp://127.0.0.1:{port}") for _ in range(2)]
    mib = 2**20
    try:
        client = Client(f"tcp://127.0.0.1:{port}", timeout=30)
        client.wait_for_workers(2, timeout=30)
        rss = psutil.Process(scheduler.pid).memory_info
        run(client, 2000, 2000)  # warm up
        print(
            f"{'tasks':>10} {'tasks/s':>9} {'us/task':>8} {'RSS before':>11} "
            f"{'RSS end':>8} {'RSS after release':>18}  (MiB, scheduler process)"
        )
        for size in (int(s) for s in options.sizes.split(",")):
            before = rss().rss
            elapsed = run(client, size, options.chunk)
            end = rss().rss
            deadline = time.monotonic() + 60
            while client.scheduler_info()["tasks"] and time.monotonic() < deadline:
                time.sleep(0.05)
            after = rss().rss
            print(
                f"{size:>10,} {size / elapsed:>9,.0f} {elapsed / size * 1e6:>8.1f} "
                f"{before / mib:>11.0f} {end / mib:>8.0f} {after / mib:>18.0f}",
                flush=True,
            )
        client.close()
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
