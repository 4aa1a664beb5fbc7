"""An in-process cluster for the launch tests (the session's process cluster is in
``tests/conftest.py``): 2 workers of one thread, the shape that deadlocks without secede.

The Dask comparisons use the session's ``dask_client`` (``tests/conftest.py``), never a
default client of their own: dask.distributed's in-process workers keep the default client
they find for a task's ``get_client()``, and keep it after it is closed, so a client closed
here made later Dask-side snippets fail with "Client is closed"."""

from __future__ import annotations

from collections.abc import Iterator

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
