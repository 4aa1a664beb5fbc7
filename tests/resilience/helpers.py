"""Killing, freezing and replacing worker processes, and reading what the ledger says."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
from engine.helpers import poll

from storied import Client, LocalCluster, config
from storied.deploy.local import SILENCE_ENV_VAR

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


class WorkerProcesses:
    """Finds, kills and starts the worker processes of a cluster.

    Replacements are ``storied worker --no-nanny`` processes, as an operator would start them; the
    test does not wait for them inside ``LocalCluster.scale``, which would fail if a new worker
    died at once (which a task that kills its worker makes it do). ``close`` stops them.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.started: list[subprocess.Popen[bytes]] = []
        self._replaced: set[int] = set()

    def _all(self) -> list[subprocess.Popen[bytes]]:
        return [w.process for w in self.cluster.workers.values()] + self.started

    def process(self, address: str) -> subprocess.Popen[bytes]:
        """The process of the worker registered at ``address``."""
        pid = self.cluster.scheduler.workers[address].pid
        return next(p for p in self._all() if p.pid == pid)

    def dead(self) -> list[subprocess.Popen[bytes]]:
        """Processes that exited and have not been replaced yet."""
        return [p for p in self._all() if p.poll() is not None and p.pid not in self._replaced]

    def start(self) -> subprocess.Popen[bytes]:
        env = config.environ_for_subprocess()
        env["STORIED_AUTH_TOKEN"] = self.cluster.security.token or ""
        env[SILENCE_ENV_VAR] = str(logging.WARNING)
        command = [
            sys.executable,
            "-m",
            "storied",
            "worker",
            self.cluster.scheduler_address,
            "--no-nanny",
        ]
        self.started.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
        return self.started[-1]

    def replace_dead(self) -> int:
        """Once the scheduler has let the dead workers go, start one new worker for each."""
        dead = {p.pid for p in self.dead()}
        scheduler = self.cluster.scheduler
        poll(lambda: not dead & {link.pid for link in list(scheduler.workers.values())})
        for _ in dead:
            self.start()
        self._replaced |= dead
        return len(dead)

    def kill_and_replace(self, address: str) -> None:
        """SIGKILL the worker at ``address``, replace it, and wait until the new one joined."""
        count = len(self.cluster.scheduler.workers)
        process = self.process(address)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        self.replace_dead()
        poll(lambda: len(self.cluster.scheduler.workers) == count, timeout=30)

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def holds_for(predicate: Callable[[], Any], seconds: float) -> None:
    """Fail as soon as ``predicate()`` is false during the next ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"stopped being true: {predicate.__name__}"
        time.sleep(0.02)


def busiest_worker(client: Client) -> str:
    """The worker that would lose the most if it died now."""
    workers = client.scheduler_info()["workers"]
    return max(workers, key=lambda a: workers[a]["processing"] + workers[a]["in_memory"])


def remove_worker_events(client: Client, addresses: set[str] | None = None) -> list[dict]:
    """The ``remove-worker`` events in the ledger's "all" topic, oldest first."""
    return [
        msg
        for _, msg in client.get_events("all")
        if msg.get("action") == "remove-worker"
        and (addresses is None or msg["worker"] in addresses)
    ]
