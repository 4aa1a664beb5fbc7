"""storied's main job, small but real: estimate pi on a local cluster, then read the record.

Run with ``make demo``.
"""

from __future__ import annotations

import random
import sys
import time

from storied import Client, LocalCluster, get_worker


def sample(seed: int, n: int = 200_000) -> int:
    """Count random points inside the unit quarter circle, logging runtimes as the seed doc does."""
    start = time.time()
    rng = random.Random(seed)
    inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    get_worker().log_event("runtimes", {"start": start, "stop": time.time(), "seed": seed})
    return inside


def total(counts: list[int]) -> int:
    return sum(counts)


def dask_estimate(client: Client) -> None:
    """The same estimate as a dask.array computation on the cluster (when dask is installed)."""
    try:
        import dask.array as da
    except ImportError:
        print("\n(dask is not installed: pip install 'storied[dask]' to compute collections)")
        return
    points = da.random.random((2_000_000, 2), chunks=(250_000, 2))
    estimate = client.compute(4 * ((points**2).sum(axis=1) <= 1).mean())
    print(f"\ndask.array says pi is about {estimate.result():.5f}; the story of its last task:")
    for where, key, start, finish, _recs, _stimulus, timestamp in client.story(estimate):
        if key == estimate.key:  # (a story also has the transitions that recommended this key)
            print(f"  {timestamp:.4f}  {where:<22} {start:>10} -> {finish}")


def main() -> None:
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        print(f"cluster: {cluster.scheduler_address} with {len(cluster.workers)} worker processes")
        print(f"dashboard: {cluster.dashboard_link}\n")
        samples = client.map(sample, range(16))
        inside = client.submit(total, samples)
        n = 16 * 200_000
        print(f"pi is about {4 * inside.result() / n:.5f} from {n:,} random points\n")

        print(f"scheduler story of {inside.key}:")
        for key, start, finish, recommendations, timestamp in cluster.scheduler.story(inside.key):
            print(
                f"  {timestamp:.4f}  {key[:14]:<14} {start:>10} -> {finish:<10} "
                f"recommends {recommendations}"
            )

        print(f"\ncluster-wide story of {samples[0].key} (scheduler and worker):")
        for where, _key, start, finish, _recs, stimulus_id, timestamp in client.story(
            samples[0].key
        ):
            print(f"  {timestamp:.4f}  {where:<22} {start:>10} -> {finish:<10} {stimulus_id}")

        dask_estimate(client)

        print("\nevents logged from inside tasks (topic 'runtimes'):")
        for timestamp, msg in client.get_events("runtimes")[:4]:
            print(f"  {timestamp:.4f}  seed={msg['seed']} took {msg['stop'] - msg['start']:.3f}s")
        print(f"  ... {len(client.get_events('runtimes'))} in all")

        print("\nthe cluster's own administrative events (topic 'all'):")
        for timestamp, msg in client.get_events("all"):
            print(f"  {timestamp:.4f}  {msg}")

        if sys.stdin.isatty():
            input(f"\nthe dashboard stays up at {cluster.dashboard_link}: press Enter to stop ")


if __name__ == "__main__":
    main()
