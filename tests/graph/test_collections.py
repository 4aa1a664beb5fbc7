"""Dask collections computed on storied: same answers as dask.distributed, run on the workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from storied import Client, Future, LocalCluster, futures_of


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def with_pid(block: np.ndarray) -> np.ndarray:
    return np.full_like(block, os.getpid())


@pytest.fixture
def worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_delayed_computes_on_the_workers(client: Client, worker_pids: set[int]) -> None:
    pids = dask.compute(*[dask.delayed(os.getpid)(dask_key_name=f"pid-{i}") for i in range(6)])
    assert set(pids) <= worker_pids and os.getpid() not in pids


def test_bag_computes_on_the_workers(client: Client, worker_pids: set[int]) -> None:
    pids = db.from_sequence(range(8), npartitions=8).map(lambda _: os.getpid()).compute()
    assert set(pids) <= worker_pids and os.getpid() not in pids


def test_array_computes_on_the_workers(client: Client, worker_pids: set[int]) -> None:
    blocks = da.zeros((40, 40), chunks=10).map_blocks(with_pid).compute()
    assert set(np.unique(blocks).astype(int)) <= worker_pids


def test_dataframe_computes_on_the_workers(client: Client, worker_pids: set[int]) -> None:
    frame = dd.from_pandas(pd.DataFrame({"a": range(100)}), npartitions=4)
    pids = frame.map_partitions(lambda df: df.assign(pid=os.getpid())).compute()["pid"]
    assert set(pids) <= worker_pids


def test_collections_answer_as_on_dask_distributed(client: Client, dask_client: Any) -> None:
    x = da.arange(10_000, chunks=500).reshape(100, 100).rechunk(25)
    bag = db.from_sequence(range(1_000), npartitions=7).map(inc).filter(lambda v: v % 3).sum()
    frame = dd.from_pandas(
        pd.DataFrame({"a": range(1_000), "b": [i % 7 for i in range(1_000)]}), npartitions=5
    )
    collections = [
        (x + x.T).sum(),
        x.mean(axis=0),
        bag,
        frame.groupby("b").a.sum(),
        dask.delayed(add)(dask.delayed(inc)(1), 10),
    ]
    for collection in collections:
        (mine,) = dask.compute(collection)
        (dasks,) = dask.compute(collection, scheduler=dask_client)
        if isinstance(mine, pd.Series):
            pd.testing.assert_series_equal(mine, dasks)
        else:
            np.testing.assert_array_equal(mine, dasks)


def test_compute_returns_a_future_or_a_list(client: Client) -> None:
    one = client.compute(dask.delayed(inc)(1))
    assert isinstance(one, Future) and one.result() == 2
    several = client.compute([dask.delayed(inc)(2), 7, da.ones(4, chunks=2).sum()])
    assert isinstance(several[0], Future) and several[1] == 7
    assert client.gather(several) == [3, 7, 4.0]
    assert client.compute([dask.delayed(inc)(3)], sync=True) == [4]


def test_persist_keeps_the_chunks_on_the_cluster(client: Client) -> None:
    x = da.arange(100, chunks=10)
    persisted = client.persist(x)
    futures = [value for value in persisted.__dask_graph__().values() if isinstance(value, Future)]
    assert len(futures) == 10
    client.gather(futures)
    assert all(f.status == "finished" for f in futures)
    assert persisted.sum().compute() == 4950
    (again,) = client.persist([persisted + 1])
    assert again.sum().compute() == 5050


def test_dask_persist_on_the_default_client_keeps_futures(client: Client) -> None:
    """``x.persist()`` and ``dask.persist(x)``, as on dask.distributed: futures-backed chunks
    on the cluster (they used to be computed and brought back, with no future left)."""
    x = da.arange(100, chunks=10).persist()
    assert len(futures_of(x)) == 10 and x.sum().compute() == 4950
    (y,) = dask.persist(x + 1)
    assert len(futures_of(y)) == 10 and y.sum().compute() == 5050


def test_persisted_chunks_are_not_computed_again(client: Client, tmp_path: Path) -> None:
    runs = tmp_path / "runs"

    def counted(i: int) -> int:
        with runs.open("a") as log:
            log.write("x")
        return i

    parts = client.persist(
        [dask.delayed(counted)(i, dask_key_name=f"counted-{i}") for i in range(4)]
    )
    assert dask.compute(dask.delayed(sum)(parts))[0] == 6
    assert dask.delayed(sum)(parts).compute() == 6
    assert runs.read_text() == "xxxx"


def test_futures_are_inputs_to_delayed(client: Client) -> None:
    future = client.submit(inc, 10)
    assert dask.delayed(add)(future, 5).compute() == 16
    assert client.compute(dask.delayed(inc)(future)).result() == 12


def test_dask_compute_takes_the_client_as_scheduler(client: Client) -> None:
    (total,) = dask.compute(da.ones(10, chunks=5).sum(), scheduler=client)
    assert total == 10


def test_closing_the_last_client_gives_dask_its_scheduler_back(cluster: LocalCluster) -> None:
    with dask.config.set(scheduler="sync"):
        with Client(cluster):
            assert dask.config.get("scheduler") not in (None, "sync")
            assert dask.delayed(os.getpid)().compute() != os.getpid()
        assert dask.config.get("scheduler") == "sync"
        assert dask.delayed(os.getpid)().compute() == os.getpid()


def test_dataframes_shuffle_with_tasks_on_storied(cluster: LocalCluster, dask_client: Any) -> None:
    """Unset, dask would pick P2P with a dask.distributed client about (storied's workers
    cannot run it) or its single-machine disk shuffle; a method the user set is kept."""
    import dask.utils

    frame = dd.from_pandas(pd.DataFrame({"k": [i % 7 for i in range(700)]}), npartitions=7)
    with dask_client.as_current():
        assert dask.utils.get_default_shuffle_method() == "p2p"
        with Client(cluster):
            assert dask.utils.get_default_shuffle_method() == "tasks"
            shuffled = frame.shuffle("k")
            assert int(shuffled.map_partitions(lambda df: df.k.nunique()).compute().sum()) == 7
        assert dask.utils.get_default_shuffle_method() == "p2p"
        with dask.config.set({"dataframe.shuffle.method": "disk"}), Client(cluster):
            assert dask.utils.get_default_shuffle_method() == "disk"


def test_annotated_retries_rerun_a_flaky_task(client: Client, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"

    def flaky() -> str:
        with attempts.open("a") as log:
            log.write("x")
        if len(attempts.read_text()) < 3:
            raise OSError("not yet")
        return "ok"

    with dask.annotate(retries=2):
        value = dask.delayed(flaky)(dask_key_name="flaky-annotated")
    assert value.compute() == "ok"
    attempts.unlink()
    with pytest.raises(OSError, match="not yet"):
        client.compute(dask.delayed(flaky)(dask_key_name="flaky-again"), retries=0).result()


def test_annotated_workers_place_every_task(client: Client) -> None:
    pids = client.run(os.getpid)
    address = sorted(pids)[0]
    with dask.annotate(workers=[address]):
        bag = db.from_sequence(range(6), npartitions=6).map(lambda _: os.getpid())
    assert set(bag.compute(optimize_graph=False)) == {pids[address]}
    tasks = [dask.delayed(os.getpid)(dask_key_name=f"on-{i}") for i in range(4)]
    assert set(client.gather(client.compute(tasks, workers=address))) == {pids[address]}


def test_a_callable_annotation_is_asked_per_key_never_with_none(client: Client) -> None:
    """Dask calls a callable annotation with each task's key; storied once asked it for the
    whole graph with ``None``, which such a callable need not take."""
    pids = client.run(os.getpid)
    address = sorted(pids)[0]
    asked: list[Any] = []

    def place(key: Any) -> list[str]:
        asked.append(key)
        if key is None:
            raise TypeError("a key is needed")
        return [address]

    graph = {"pid-a": (os.getpid,), "pid-b": (os.getpid,)}
    with dask.annotate(workers=place):
        found = client.get(graph, ["pid-a", "pid-b"])
    assert set(found) == {pids[address]}
    assert sorted(asked) == ["pid-a", "pid-b"]


def test_without_dask_storied_runs_and_says_what_needs_it(tmp_path: Path) -> None:
    """A ``dask`` that cannot be imported stands for one that is not installed."""
    fake = tmp_path / "dask"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named dask')\n")
    script = """
from storied import Client, LocalCluster
with LocalCluster(n_workers=1, processes=False) as cluster, Client(cluster) as client:
    assert client.submit(abs, -3).result() == 3
    try:
        client.get({"x": 1}, "x")
    except ImportError as exc:
        print(exc)
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'storied[dask]'" in done.stdout


def test_annotated_priority_runs_first_on_a_busy_worker(client: Client, tmp_path: Path) -> None:
    gate, order = tmp_path / "gate", tmp_path / "order"
    address = sorted(client.run(os.getpid))[0]

    def blocker() -> None:
        while not gate.exists():
            time.sleep(0.005)

    def note(name: str) -> str:
        with order.open("a") as log:
            log.write(name + "\n")
        return name

    blocked = client.submit(blocker, workers=[address], pure=False)
    with dask.annotate(priority=-1):
        low = [dask.delayed(note)(f"low-{i}", dask_key_name=f"low-{i}") for i in range(3)]
    with dask.annotate(priority=10):
        high = [dask.delayed(note)(f"high-{i}", dask_key_name=f"high-{i}") for i in range(3)]
    low_futures = client.compute(low, workers=address)
    wait_until_processing(client, [f.key for f in low_futures])
    high_futures = client.compute(high, workers=address)
    wait_until_processing(client, [f.key for f in high_futures])
    gate.touch()
    client.gather([blocked, *low_futures, *high_futures])
    ran = order.read_text().split()
    assert [name.split("-")[0] for name in ran] == ["high"] * 3 + ["low"] * 3


def test_annotated_allow_other_workers_makes_workers_a_preference(client: Client) -> None:
    with dask.annotate(workers=["no-such-worker"], allow_other_workers=True):
        value = dask.delayed(inc)(1, dask_key_name="loose-inc")
    assert value.compute() == 2


def wait_until_processing(client: Client, keys: list[str]) -> None:
    """Until the scheduler has placed every one of ``keys`` on a worker."""
    deadline = time.monotonic() + 10

    def placed(dask_scheduler: Any = None) -> bool:
        return all(
            key in dask_scheduler.state.tasks
            and dask_scheduler.state.tasks[key].state == "processing"
            for key in keys
        )

    while not client.run_on_scheduler(placed):
        assert time.monotonic() < deadline, f"{keys} were never placed"
        time.sleep(0.01)
