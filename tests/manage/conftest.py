"""Worker processes cannot import the tests' helpers: their task functions go by value. And
a quick cluster of in-process workers, for tests that need no processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cloudpickle
import pytest

from storied import Client, LocalCluster

from . import helpers

cloudpickle.register_pickle_by_value(helpers)


@pytest.fixture
def in_process() -> Iterator[Callable[[int], tuple[LocalCluster, Client]]]:
    """``start(n_workers)``: a LocalCluster of in-process one-thread workers and a client;
    both closed after the test."""
    opened: list[tuple[LocalCluster, Client]] = []

    def start(n_workers: int) -> tuple[LocalCluster, Client]:
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=False, dashboard_address=None
        )
        opened.append((cluster, Client(cluster)))
        return opened[-1]

    yield start
    for cluster, client in opened:
        client.close()
        cluster.close()
