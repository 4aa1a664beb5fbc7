"""A client inside the scheduler's network namespace, driven by the netns test over stdio.

The test process lives in the host namespace and cannot reach the private network, so it
sends this process one JSON request per line and reads one JSON reply per line.
Run as ``python -m resilience.netns_driver ADDRESS`` from ``tests/`` with
``STORIED_AUTH_TOKEN`` set.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from engine.helpers import where_am_i

from resilience.helpers import pairwise_sum_expected, pairwise_sum_graph, remove_worker_events
from storied import Client, Future


class Driver:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.futures: list[Future] = []
        self.leaves = 0

    def wait_workers(self, n: int) -> int:
        self.client.wait_for_workers(n, timeout=30)
        return n

    def submit(self, leaves: int, seconds: float) -> int:
        self.leaves = leaves
        self.futures = pairwise_sum_graph(self.client, leaves, seconds)
        return len(self.futures)

    def progress(self) -> dict[str, Any]:
        workers = self.client.scheduler_info()["workers"]
        return {
            "done": sum(f.done() for f in self.futures),
            "workers": {info["name"]: {"address": a, **info} for a, info in workers.items()},
        }

    def result(self) -> dict[str, Any]:
        value = self.futures[-1].result(timeout=60)
        return {
            "correct": value == pairwise_sum_expected(self.leaves),
            "statuses": sorted({f.status for f in self.futures}),
        }

    def removals(self) -> list[dict[str, Any]]:
        return remove_worker_events(self.client)

    def where(self, worker: str) -> list[str]:
        return list(self.client.submit(where_am_i, workers=[worker], pure=False).result(10))


def main(address: str) -> None:
    with Client(address) as client:
        driver = Driver(client)
        for line in sys.stdin:
            request = json.loads(line)
            method: Callable[..., Any] = getattr(driver, request.pop("op"))
            try:
                reply = {"ok": method(**request)}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
