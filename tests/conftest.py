"""Shared fixtures: an in-memory recorder for the pure state machines, and a live cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import cloudpickle
import pytest

from storied import Client, LocalCluster
from storied.comm import Listener, Security
from storied.loop import LoopThread


class ListRecorder:
    """Stands in for ``storied.record.Record``: keeps every transition as a plain tuple."""

    def __init__(self) -> None:
        self.transitions: list[tuple[str, str, str, dict[str, str], str, str | None]] = []

    def transition(
        self,
        key: str,
        start: str,
        finish: str,
        recommendations: Mapping[str, str],
        stimulus_id: str,
        worker: str | None = None,
    ) -> None:
        self.transitions.append((key, start, finish, dict(recommendations), stimulus_id, worker))

    def story(self, key: str) -> list[tuple[str, str, dict[str, str]]]:
        """``(start, finish, recommendations)`` of every transition of ``key``, oldest first."""
        return [
            (start, finish, recs) for k, start, finish, recs, _, _ in self.transitions if k == key
        ]

    def path(self, key: str) -> list[str]:
        """The states ``key`` went through, e.g. ``["released", "waiting", "processing"]``."""
        story = self.story(key)
        return [story[0][0], *(finish for _, finish, _ in story)] if story else []


@pytest.fixture
def recorder() -> ListRecorder:
    return ListRecorder()


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> None:
    """Worker processes cannot import test modules, so ship their functions by value.

    This is what happens to functions a user defines in a script's ``__main__`` anyway.
    """
    cloudpickle.register_pickle_by_value(request.module)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """Two worker processes, one thread each: the shape the issue asks for, shared by tests
    that leave the cluster as they found it."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    ) as local_cluster:
        yield local_cluster


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as connected:
        yield connected


@pytest.fixture
def loop_listener() -> Iterator[Callable[..., Listener]]:
    """Starts listeners on a loop thread of their own (so connections from the test's loop go
    over TCP, not in memory); closes them after."""
    loop_thread = LoopThread.acquire()
    listeners: list[Listener] = []

    def start(handler: Any, security: Security, **options: Any) -> Listener:
        listener = Listener("tcp://127.0.0.1:0", handler, security, **options)
        loop_thread.run(listener.start())
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        loop_thread.run(listener.close())
    loop_thread.release()


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    """dask.distributed itself, in this process, in the same shape (2 workers x 1 thread): to
    compare what storied returns with what Dask returns."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as local_cluster:
        yield local_cluster


@pytest.fixture(scope="session")
def dask_client(dask_cluster: Any) -> Iterator[Any]:
    """A client of ``dask_cluster`` that leaves dask's default scheduler alone."""
    import distributed

    with distributed.Client(dask_cluster, set_as_default=False) as connected:
        yield connected
