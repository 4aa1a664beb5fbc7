"""Killing, freezing and replacing worker processes, and reading what the ledger says."""

from __future__ import annotations

import os
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
        level = client.map(add, level[0::2], level[1::2])
        futures += level
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


def kill_and_replace(cluster: LocalCluster, address: str) -> None:
    """SIGKILL the worker at ``address``, wait until the scheduler has noticed, start another."""
    name, process = process_of(cluster, address)
    wanted = len(cluster.workers)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    poll(lambda: address not in cluster.scheduler.workers, timeout=10)
    del cluster.workers[name]
    cluster.scale(wanted)


def remove_worker_events(client: Client, addresses: set[str] | None = None) -> list[dict]:
    """The ``remove-worker`` events in the ledger's "all" topic, oldest first."""
    return [
        msg
        for _, msg in client.get_events("all")
        if msg.get("action") == "remove-worker"
        and (addresses is None or msg["worker"] in addresses)
    ]


def transitions_caused_by(cluster: LocalCluster, stimulus_id: str) -> list[Any]:
    return cluster.scheduler.transitions(stimulus_id=stimulus_id)


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive
