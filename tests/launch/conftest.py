"""An in-process cluster for the launch tests (the session's process cluster is in
``tests/conftest.py``): 2 workers of one thread, the shape that deadlocks without secede."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storied import Client, LocalCluster


@pytest.fixture(scope="module")
def threads_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:
        yield cluster


@pytest.fixture
def threads_client(threads_cluster: LocalCluster) -> Iterator[Client]:
    with Client(threads_cluster) as client:
        yield client


@pytest.fixture
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """A default dask client of the session's ``dask_cluster`` (tests/conftest.py), per test."""
    import distributed

    client = distributed.Client(dask_cluster)
    try:
        yield client
    finally:
        client.close()
