"""Fixtures for the resilience tests: clusters whose workers we kill, freeze and cut off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storied import Client, LocalCluster, config


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: needs root and iproute2 to build network namespaces (multi-host)"
    )


@pytest.fixture
def fragile_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Two single-threaded worker processes that each test may kill: never shared.

    Worker-ttl and reconnect-timeout are short so that a silent worker is noticed within
    seconds and a cut-off one gives up before the test session ends. Tests add config
    through indirect parametrization: ``parametrize("fragile_cluster", [{...}], indirect=True)``.
    """
    overrides = {
        "scheduler.worker-ttl": "3s",
        "comm.reconnect-timeout": "20s",
        **getattr(request, "param", {}),
    }
    with (
        config.set(overrides),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster,
    ):
        yield cluster


@pytest.fixture
def fragile_client(fragile_cluster: LocalCluster) -> Iterator[Client]:
    with Client(fragile_cluster) as client:
        yield client
