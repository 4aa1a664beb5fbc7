"""Fixtures for the resilience tests: clusters whose workers we kill, freeze and cut off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storied import Client, LocalCluster, config

from .helpers import WorkerProcesses


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: needs root and iproute2 to build network namespaces (multi-host)"
    )


@pytest.fixture
def n_workers() -> int:
    """Override with ``@pytest.mark.parametrize("n_workers", [...])``."""
    return 2


@pytest.fixture
def cluster_config() -> dict[str, Any]:
    """Extra config for ``fragile_cluster``; override like ``n_workers``."""
    return {}


@pytest.fixture
def fragile_cluster(n_workers: int, cluster_config: dict[str, Any]) -> Iterator[LocalCluster]:
    """Single-threaded worker processes that the test may kill: never shared.

    Worker-ttl is short so that a silent worker is noticed within seconds; the config stays
    set for the whole test, so replacement workers get it too. No nannies: these tests kill
    workers and start their replacements themselves (tests/nanny has the nanny's own).
    """
    overrides = {"scheduler.worker-ttl": "3s", "comm.reconnect-timeout": "20s", **cluster_config}
    with (
        config.set(overrides),
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", nanny=False
        ) as cluster,
    ):
        yield cluster


@pytest.fixture
def fragile_client(fragile_cluster: LocalCluster) -> Iterator[Client]:
    with Client(fragile_cluster) as client:
        yield client


@pytest.fixture
def worker_processes(fragile_cluster: LocalCluster) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(fragile_cluster)
    yield processes
    processes.close()
