"""client.restart: every worker restarts (through its nanny, or closed and replaced), every
task is forgotten and every future cancelled, as in Dask; on the record."""

from __future__ import annotations

import pytest

from storied import Client, LocalCluster
from storied.exceptions import CancelledError

from .helpers import alive, events, wait_until


def inc(x: int) -> int:
    return x + 1


def _pids(client: Client) -> dict[str, tuple[int, int | None]]:
    return {
        w["name"]: (w["pid"], w["nanny_pid"]) for w in client.scheduler_info()["workers"].values()
    }


def test_restart_through_nannies_cancels_futures_and_brings_workers_back():
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
        Client(cluster) as other,
    ):
        futures = client.map(inc, range(4))
        assert client.gather(futures) == [1, 2, 3, 4]
        theirs = other.submit(inc, 100)
        theirs.result()
        before = _pids(client)

        client.restart(timeout=60)

        after = _pids(client)
        assert sorted(after) == sorted(before) == ["0", "1"]
        for name, (pid, nanny_pid) in after.items():
            assert pid != before[name][0] and nanny_pid == before[name][1]
            assert not alive(before[name][0])
        assert all(f.status == "cancelled" for f in futures)
        wait_until(lambda: theirs.status == "cancelled")
        with pytest.raises(CancelledError):
            futures[0].result(timeout=5)
        assert cluster.scheduler.tasks == {}
        # the same computation again is computed again
        assert client.gather(client.map(inc, range(4))) == [1, 2, 3, 4]
        (event,) = events(client, "restart", "restart")
        assert event["client"] == client.id
        assert sorted(event["restarted-by-nanny"]) == sorted(event["workers"])
        restarts = events(client, "nanny", "worker-restart")
        assert sorted(e["name"] for e in restarts) == ["0", "1"]
        assert {e["reason"] for e in restarts} == {"restart requested"}


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "in-process"])
def test_workers_without_nannies_are_closed_and_replaced_by_the_local_cluster(processes):
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            nanny=False,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        future = client.submit(inc, 1)
        future.result()
        before = set(client.nthreads())
        client.restart(timeout=60)
        after = set(client.nthreads())
        assert len(after) == 2 and not after & before
        assert future.status == "cancelled"
        assert client.submit(inc, 2).result() == 3
        (event,) = events(client, "restart", "restart")
        assert sorted(event["closed"]) == sorted(before)


def test_restart_takes_durations_and_rejects_bad_ones():
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(ValueError, match="duration"):
            client.restart(timeout="soon")
        with pytest.raises(ValueError, match="positive duration"):
            client.restart(timeout=0)
        client.restart(timeout="30s")  # a Dask-style duration
        assert client.submit(inc, 1).result() == 2


def _restart_adapt_shutdown(client, cluster) -> tuple[object, ...]:
    """The same calls, written once, for storied and dask.distributed."""
    future = client.submit(inc, 1)
    future.result()
    restarted = client.restart()
    adaptive = type(cluster.adapt(minimum=1, maximum=1)).__name__
    return restarted, future.status, adaptive, client.shutdown(), client.status


def test_restart_adapt_and_shutdown_answer_as_dask_s():
    from distributed import Client as DaskClient
    from distributed import LocalCluster as DaskLocalCluster

    dask_cluster = DaskLocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    theirs = _restart_adapt_shutdown(DaskClient(dask_cluster), dask_cluster)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None)
    ours = _restart_adapt_shutdown(Client(cluster), cluster)
    assert ours == theirs == (None, "cancelled", "Adaptive", None, "closed")
    assert cluster.status == "closed"
