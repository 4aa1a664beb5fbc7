"""Shared fixtures: an in-memory recorder for the pure state machines, a live cluster, and a
real browser."""

from __future__ import annotations

import shutil
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
    """A client of ``dask_cluster`` that leaves dask's default scheduler alone.

    Its periodic scheduler-info refresh is pushed back an hour: that refresh asks for no
    workers, and when it lands between ``scheduler_info()``'s own refresh and its return,
    dask.distributed 2026.8 answers with no workers at all (a corpus snippet taking the first
    worker failed so on CI)."""
    import dask
    import distributed

    with (
        dask.config.set({"distributed.client.scheduler-info-interval": "1h"}),
        distributed.Client(dask_cluster, set_as_default=False) as connected,
    ):
        yield connected


#: Debian's Chromium, driven by Playwright (never ``playwright install``)
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Exception as exc:  # the reason is in the message: sandbox, missing libraries
            pytest.skip(f"Chromium cannot be launched here: {exc}")
        yield launched
        launched.close()
