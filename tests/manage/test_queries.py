"""who_has, has_what, nthreads (ncores): Dask's shapes, on a live cluster."""

from __future__ import annotations

import pytest
from distributed import Client as DaskClient
from distributed import LocalCluster as DaskLocalCluster


def inc(x: int) -> int:
    return x + 1


def _shape(client, futures):
    who_has = client.who_has(futures)
    has_what = client.has_what()
    nthreads = client.nthreads()
    return who_has, has_what, nthreads


def _assert_shapes(futures, who_has, has_what, nthreads):
    assert isinstance(who_has, dict) and set(who_has) == {f.key for f in futures}
    assert all(type(v) is list and v for v in who_has.values())
    assert all(type(v) is list for v in has_what.values())
    assert isinstance(has_what, dict)
    for key, holders in who_has.items():
        for address in holders:
            assert key in has_what[address]
    assert isinstance(nthreads, dict) and set(nthreads) == set(has_what)
    assert all(type(n) is int and n >= 1 for n in nthreads.values())


def test_shapes_match_dask(client):
    futures = client.map(inc, range(4))
    client.gather(futures)
    who_has, has_what, nthreads = _shape(client, futures)
    _assert_shapes(futures, who_has, has_what, nthreads)
    assert client.ncores() == nthreads
    first = next(iter(nthreads))
    assert client.nthreads([first]) == {first: nthreads[first]}
    with (
        DaskLocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as dask_cluster,
        DaskClient(dask_cluster) as dask_client,
    ):
        dask_futures = dask_client.map(inc, range(4))
        dask_client.gather(dask_futures)
        dask_shapes = _shape(dask_client, dask_futures)
        _assert_shapes(dask_futures, *dask_shapes)
        assert dask_client.ncores() == dask_shapes[2]


def test_who_has_without_futures_covers_every_task_and_has_what_by_name(client):
    futures = client.map(inc, range(10, 13))
    client.gather(futures)
    everything = client.who_has()
    assert {f.key for f in futures} <= set(everything)
    info = client.scheduler_info()["workers"]
    address, worker = next(iter(info.items()))
    assert set(client.has_what(worker["name"])) == {address}
    assert client.nthreads([worker["name"]]) == {address: worker["nthreads"]}
    assert client.who_has(futures[0]) == {futures[0].key: everything[futures[0].key]}


def test_unknown_workers_and_bad_arguments_are_clear_errors(client):
    with pytest.raises(ValueError, match="no worker"):
        client.has_what(["tcp://127.0.0.1:1"])
    with pytest.raises(ValueError, match="no worker"):
        client.nthreads("nobody")
    with pytest.raises(TypeError, match="futures, keys or collections"):
        client.who_has([object()])
    with pytest.raises(TypeError, match="workers must be"):
        client.has_what({"a": 1})
    assert client.submit(inc, 1).result() == 2  # the scheduler carries on


def test_who_has_of_a_persisted_collection_covers_its_chunks(client):
    import dask.array as da

    from storied import futures_of

    x = client.persist(da.ones(40, chunks=10))
    client.gather(futures_of(x))
    held = client.who_has(x)
    assert set(held) == {f.key for f in futures_of(x)} and len(held) == 4
    assert all(held.values())
    with pytest.raises(TypeError, match="collections persisted"):
        client.who_has(da.ones(10, chunks=5))  # not persisted: no futures behind it
