"""A task raising SystemExit, KeyboardInterrupt or another BaseException fails with it, as in
Dask, and the cluster and client keep working; so do ``client.run`` and ``run_on_scheduler``
(issue "workers that come back")."""

from __future__ import annotations

import pytest

from storied import Client, LocalCluster
from tests.engine.helpers import inc


class CustomBaseException(BaseException):
    pass


def raise_(exc_type):
    raise exc_type("raised by the task")


BASE_EXCEPTIONS = [SystemExit, KeyboardInterrupt, CustomBaseException]


def check_task_fails_and_cluster_goes_on(client, exc_type):
    future = client.submit(raise_, exc_type, pure=False)
    with pytest.raises(exc_type, match="raised by the task"):
        future.result(timeout=30)
    assert future.status == "error"
    assert isinstance(future.exception(timeout=30), exc_type)
    assert client.submit(inc, 1, pure=False).result(timeout=30) == 2


@pytest.mark.parametrize("exc_type", BASE_EXCEPTIONS)
def test_on_worker_processes(client, exc_type):
    check_task_fails_and_cluster_goes_on(client, exc_type)


@pytest.mark.parametrize("exc_type", BASE_EXCEPTIONS)
def test_on_in_process_workers(threads_client, exc_type):
    check_task_fails_and_cluster_goes_on(threads_client, exc_type)


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_run_and_run_on_scheduler_raise_it_at_the_caller_only(threads_client, exc_type):
    with pytest.raises(exc_type):
        threads_client.run(raise_, exc_type)
    with pytest.raises(exc_type):
        threads_client.run_on_scheduler(raise_, exc_type)
    assert threads_client.submit(inc, 1, pure=False).result(timeout=30) == 2
    assert len(threads_client.run(lambda: 1)) == 2


def test_a_task_in_a_fresh_cluster_raising_systemexit_leaves_its_worker_process_up():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        with pytest.raises(SystemExit):
            client.submit(raise_, SystemExit, pure=False).result(timeout=30)
        pids = client.run(lambda: __import__("os").getpid())
        assert client.submit(inc, 2, pure=False).result(timeout=30) == 3
        assert client.run(lambda: __import__("os").getpid()) == pids
