"""retire_workers: data only the retiring workers hold moves first (nothing is recomputed),
then they close, and their nannies do not start them again."""

from __future__ import annotations

import pytest
from distributed import Client as DaskClient
from distributed import LocalCluster as DaskLocalCluster

from storied import Client, LocalCluster

from .helpers import alive, events, record_run, runs, wait_until


@pytest.fixture
def nanny_cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, nanny=True
    ) as cluster:
        yield cluster


def test_a_retired_worker_s_data_survives_without_recomputation(nanny_cluster, tmp_path):
    log = str(tmp_path / "runs.log")
    with Client(nanny_cluster) as client:
        info = client.scheduler_info()["workers"]
        (leaving, leaving_info), (staying, _) = sorted(info.items(), key=lambda i: i[1]["name"])
        futures = client.map(record_run, [log] * 5, range(5), workers=[leaving], pure=False)
        assert client.gather(futures) == [0, 10, 20, 30, 40]
        assert set(client.who_has(futures)[futures[0].key]) == {leaving}
        assert runs(log) == 5

        retired = client.retire_workers([leaving])

        assert set(retired) == {leaving}
        assert retired[leaving]["name"] == leaving_info["name"]
        assert set(client.nthreads()) == {staying}
        assert all(holders == [staying] for holders in client.who_has(futures).values())
        assert client.gather(futures) == [0, 10, 20, 30, 40]
        assert runs(log) == 5  # moved, not computed again
        (event,) = events(client, "retire-workers", "retire-workers")
        assert event["workers"] == [leaving] and event["moved-keys"] == 5
        assert event["client"] == client.id
        removed = [e for e in events(client, "all", "remove-worker") if e["worker"] == leaving]
        assert [(e["reason"], e["cause"], e["expected"]) for e in removed] == [
            ("retired", "retired", True)
        ]
        assert removed[0]["stimulus_id"].startswith("worker-left-retired-")
        # its nanny went with it: nothing starts the worker again
        wait_until(lambda: not alive(leaving_info["nanny_pid"]))
        assert not alive(leaving_info["pid"])
        assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["1"]
        # and the cluster can grow again with a fresh worker
        nanny_cluster.scale(2)
        client.wait_for_workers(2, timeout=30)
        assert client.submit(record_run, log, 7, pure=False).result() == 70


def test_retire_by_name_keeps_the_rest_working_and_refuses_unknown_workers(in_process, tmp_path):
    _, client = in_process(2)
    with pytest.raises(ValueError, match="no worker"):
        client.retire_workers(["tcp://127.0.0.1:1"])
    with pytest.raises(TypeError, match="does not take Dask's"):
        client.retire_workers(n=1)
    assert client.retire_workers([]) == {}  # no one, not "the scheduler's choice"
    assert len(client.nthreads()) == 2
    futures = client.map(record_run, [str(tmp_path / "r")] * 4, range(4), pure=False)
    client.gather(futures)
    retired = client.retire_workers("0")
    assert [info["name"] for info in retired.values()] == ["0"]
    assert client.gather(futures) == [0, 10, 20, 30]
    assert runs(tmp_path / "r") == 4
    # no worker would remain for data only the last one holds: refused, nothing lost
    with pytest.raises(ValueError, match="no other worker would remain"):
        client.retire_workers("1")
    assert client.gather(futures) == [0, 10, 20, 30]


def test_retire_without_closing_moves_the_data_and_returns_dask_s_shape(in_process, tmp_path):
    _, client = in_process(2)
    futures = client.map(record_run, [str(tmp_path / "r")] * 3, range(3), pure=False)
    client.gather(futures)
    first = next(iter(client.nthreads()))
    ours = client.retire_workers([first], close_workers=False, remove=False)
    assert set(client.nthreads()) == {first, *client.nthreads()}  # still there
    assert len(client.nthreads()) == 2
    others = [a for a in client.nthreads() if a != first]
    assert all(set(others) <= set(h) for h in client.who_has(futures).values())
    with (
        DaskLocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as dask_cluster,
        DaskClient(dask_cluster) as dask_client,
    ):
        dask_client.gather(dask_client.map(str, range(3)))
        address = next(iter(dask_client.nthreads()))
        theirs = dask_client.retire_workers([address])
    assert set(ours) == {first} and set(theirs) == {address}
    common = {"name", "nthreads", "resources"}
    assert common <= set(ours[first]) and common <= set(theirs[address])


def test_retire_without_names_retires_the_idle_workers_but_one(in_process):
    cluster, client = in_process(3)
    assert client.submit(abs, -3).result() == 3
    retired = client.retire_workers()
    assert len(retired) == 2
    assert len(client.nthreads()) == 1 and len(cluster.scheduler.workers) == 1
