"""A client inside the scheduler's network namespace that moves data between two worker hosts.

Run as ``python -m wire.compression_driver ADDRESS`` from ``tests/`` (with
``STORIED_AUTH_TOKEN`` set). For each line ``KIND SOURCE TARGET`` read from stdin it makes a
``KIND`` array (``zeros`` or ``noise``, 40 MB) on worker ``SOURCE``, has worker ``TARGET``
check it, and prints one JSON line: whether the check passed.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from storied import Client

SIZE = 5_000_000  # float64s: 40 MB


def make(kind: str) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(SIZE)
    return np.random.default_rng(0).random(SIZE)


def matches(kind: str, value: np.ndarray) -> bool:
    return bool(np.array_equal(value, make(kind)))


def main(address: str) -> None:
    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        by_name = {info["name"]: w for w, info in client.scheduler_info()["workers"].items()}
        print(json.dumps({"ready": True}), flush=True)
        while line := sys.stdin.readline():
            kind, source, target = line.split()
            made = client.submit(make, kind, workers=[by_name[source]], pure=False)
            client.gather(client.submit(len, made, workers=[by_name[source]]))  # made, not moved
            print(json.dumps({"made": True}), flush=True)
            sys.stdin.readline()  # the test reads the target's counters, then says go
            check = client.submit(matches, kind, made, workers=[by_name[target]], pure=False)
            print(json.dumps({"ok": check.result(timeout=60)}), flush=True)
            del made, check


if __name__ == "__main__":
    main(sys.argv[1])
