"""A scheduler with no workers of its own, and `storied worker` processes with resources."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storied import Client, LocalCluster
from tests.engine.helpers import poll

STORIED = str(Path(sys.executable).with_name("storied"))

Popen = subprocess.Popen[bytes]
StartWorker = Callable[..., Popen]


@pytest.fixture(scope="module")
def bare_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=0, security=False) as cluster:
        yield cluster


@pytest.fixture
def start_worker(bare_cluster: LocalCluster) -> Iterator[StartWorker]:
    """``start_worker(name, nthreads, "GPU=1")``: a worker process, returned once it joined;
    stopped (and waited for to leave) after the test."""
    started: list[tuple[str, Popen]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIED_")}

    def start(name: str, nthreads: int = 1, resources: str | None = None) -> Popen:
        command = [STORIED, "worker", bare_cluster.scheduler_address, "--name", name]
        command += ["--nthreads", str(nthreads)]
        if resources is not None:
            command += ["--resources", resources]
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        started.append((name, process))
        poll(lambda: name in worker_names(bare_cluster), 30, f"worker {name} joined")
        return process

    yield start
    for _, process in started:
        process.terminate()
    for _, process in started:
        process.wait(15)
    gone = {name for name, _ in started}
    poll(lambda: not gone & worker_names(bare_cluster), 15, f"workers {gone} left")


@pytest.fixture
def bare_client(bare_cluster: LocalCluster) -> Iterator[Client]:
    with Client(bare_cluster) as client:
        yield client


def worker_names(cluster: LocalCluster) -> set[str]:
    return {link.name for link in cluster.scheduler.workers.values()}
