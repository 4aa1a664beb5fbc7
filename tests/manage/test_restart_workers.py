"""client.restart_workers: the named workers restart through their nannies, tasks are kept
(what the restarted ones held is computed again), as in Dask; on the record."""

from __future__ import annotations

import pytest

from storied import Client, LocalCluster

from .helpers import alive, events, wait_until


def inc(x: int) -> int:
    return x + 1


def _pids(client: Client) -> dict[str, int]:
    return {w["name"]: w["pid"] for w in client.scheduler_info()["workers"].values()}


def _restart_one(client: Client) -> tuple[list[str], list[int], int]:
    """The same calls, written once, for storied and dask.distributed: restart the first
    worker by address, then use futures computed before."""
    futures = client.map(inc, range(6))
    assert client.gather(futures) == list(range(1, 7))
    address = sorted(client.scheduler_info()["workers"])[0]
    restarted = client.restart_workers([address], timeout=60)
    assert list(restarted) == [address]
    return list(restarted.values()), client.gather(futures), client.submit(inc, 10).result()


def test_restart_workers_restarts_only_the_named_and_keeps_tasks():
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        before = _pids(client)
        workers = client.scheduler_info()["workers"]
        name = workers[sorted(workers)[0]]["name"]
        restarted, values, later = _restart_one(client)
        assert restarted == ["OK"]
        assert values == list(range(1, 7)) and later == 11
        after = _pids(client)
        assert sorted(after) == sorted(before)
        assert after[name] != before[name] and not alive(before[name])
        [other] = set(before) - {name}
        assert after[other] == before[other], "the other worker was left alone"
        (event,) = events(client, "restart-workers", "restart-workers")
        assert event["client"] == client.id and len(event["workers"]) == 1
        restarts = events(client, "nanny", "worker-restart")
        assert [e["name"] for e in restarts] == [name]
        assert client.restart_workers([name], timeout=60) == {name: "OK"}, "by name too"
        assert _pids(client)[name] != after[name]


def test_restart_workers_answers_as_dask_s():
    from distributed import Client as DaskClient
    from distributed import LocalCluster as DaskLocalCluster

    with (
        DaskLocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as theirs,
        DaskClient(theirs) as dask_client,
    ):
        dask_answer = _restart_one(dask_client)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as ours,
        Client(ours) as client,
    ):
        assert _restart_one(client) == dask_answer


def test_restart_workers_needs_nannies_and_known_workers():
    with (
        LocalCluster(n_workers=1, nanny=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        [address] = client.nthreads()
        with pytest.raises(ValueError, match="needs workers under a nanny"):
            client.restart_workers([address])
        with pytest.raises(ValueError, match="no worker"):
            client.restart_workers(["tcp://127.0.0.1:1"])
        with pytest.raises(TypeError, match="list of worker"):
            client.restart_workers(address)
        with pytest.raises(ValueError, match="positive duration"):
            client.restart_workers([address], timeout=0)
        wait_until(lambda: client.submit(inc, 1).result() == 2)
