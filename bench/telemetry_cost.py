"""What resource telemetry costs per heartbeat: a worker's sample, and the scheduler keeping it.

Both run once a second per worker (``worker.heartbeat-interval``), whatever the workload, so
their cost as a fraction of a core is the time per sample divided by the interval. Measured on
a real in-process cluster (one worker), best of several rounds of many calls (the scheduler's
part called from this thread: its loop idles meanwhile).

    .venv/bin/python bench/telemetry_cost.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from storied import Client, LocalCluster, config

CALLS = 2_000
ROUNDS = 5


def best_seconds_per_call(call: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(CALLS):
            call()
        best = min(best, (time.perf_counter() - start) / CALLS)
    return best


def main() -> None:
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(lambda x: x, range(1_000)))  # some results to count
        [worker] = cluster.workers.values()
        assert worker.telemetry is not None
        telemetry = cluster.scheduler.extensions["telemetry"]
        one = worker.telemetry.sample()
        sample_s = best_seconds_per_call(worker.telemetry.sample)
        keep_s = best_seconds_per_call(partial(telemetry.add_sample, worker.address, "0", one))
    interval = config.parse_timedelta(config.get("worker.heartbeat-interval")) or 1.0
    for what, seconds, unit in (
        ("worker sample", sample_s, "heartbeat"),
        ("scheduler keeping it", keep_s, "sample, per worker"),
    ):
        print(f"{what}: {seconds * 1e6:.0f} us per {unit}: {seconds / interval:.3%} of a core")


if __name__ == "__main__":
    main()
