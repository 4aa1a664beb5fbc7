"""Killing, freezing and replacing worker processes, and reading what the ledger says."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import cloudpickle

from engine.helpers import poll
from storied import Client, LocalCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_inc(x: int, seconds: float) -> int:
    """``x + 1`` that takes a while, so that a graph is still running when we strike."""
    time.sleep(seconds)
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def pairwise_sum_graph(client: Client, n_leaves: int, seconds: float) -> list[Any]:
    """Leaves, their pairwise sums, then a tree reduction: every future of the graph, the
    final sum last (``n_leaves`` leaves make ``2 * n_leaves - 1`` tasks)."""
    level = client.map(slow_inc, range(n_leaves), seconds=seconds)
    futures = list(level)
    while len(level) > 1:
        carried = level[-1:] if len(level) % 2 else []
        level = client.map(add, level[0::2], level[1::2]) + carried
        futures += level[: len(level) - len(carried)]
    return futures


def pairwise_sum_expected(n_leaves: int) -> int:
    return sum(range(1, n_leaves + 1))


def process_of(cluster: LocalCluster, address: str) -> tuple[str, Any]:
    """The cluster's name for the worker process behind ``address``, and that process."""
    pid = cluster.scheduler.workers[address].pid
    for name, worker in cluster.workers.items():
        if worker.pid == pid:
            return name, worker.process
    raise LookupError(f"no process of this cluster serves {address}")


def busiest_worker(client: Client) -> str:
    """The worker that would lose the most if it died now."""
    workers = client.scheduler_info()["workers"]
    return max(workers, key=lambda a: workers[a]["processing"] + workers[a]["in_memory"])


def dead_workers(cluster: LocalCluster) -> list[str]:
    """Names of the cluster's worker processes that have exited."""
    return [name for name, worker in cluster.workers.items() if worker.process.poll() is not None]


def replace_dead_workers(cluster: LocalCluster) -> int:
    """Start a new worker process for each dead one, once the scheduler has let it go."""
    dead = dead_workers(cluster)
    pids = {cluster.workers[name].pid for name in dead}
    poll(lambda: not pids & {link.pid for link in list(cluster.scheduler.workers.values())},
         timeout=10)
    wanted = len(cluster.workers)
    for name in dead:
        del cluster.workers[name]
    cluster.scale(wanted)
    return len(dead)


def kill_and_replace(cluster: LocalCluster, address: str) -> None:
    """SIGKILL the worker at ``address`` and start another in its place."""
    _, process = process_of(cluster, address)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    replace_dead_workers(cluster)


def remove_worker_events(client: Client, addresses: set[str] | None = None) -> list[dict]:
    """The ``remove-worker`` events in the ledger's "all" topic, oldest first."""
    return [
        msg
        for _, msg in client.get_events("all")
        if msg.get("action") == "remove-worker"
        and (addresses is None or msg["worker"] in addresses)
    ]
