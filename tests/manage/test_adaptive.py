"""cluster.adapt: the pure decision, and a LocalCluster that grows with its tasks and shrinks
back (retiring, so results are kept) once its workers stay idle."""

from __future__ import annotations

import math
import time

import pytest

from storied import LocalCluster
from storied.deploy.adaptive import Load, recommend

from .helpers import events, record_run, runs, wait_until


def _load(processing=0, no_worker=0, idle=(), busy=(), holding=None):
    flags = {**dict.fromkeys(idle, True), **dict.fromkeys(busy, False)}
    return Load(processing, no_worker, flags, holding or dict.fromkeys(flags, 0))


def test_more_runnable_tasks_than_threads_asks_for_workers_up_to_the_maximum():
    target, retire, why = recommend(_load(7, busy=["a"]), 2, 0, 3, {}, 3)
    assert (target, retire) == (3, [])
    assert "7 runnable" in why
    assert recommend(_load(3, busy=["a"]), 2, 0, math.inf, {}, 3)[0] == 2


def test_no_worker_tasks_start_a_first_worker_and_the_minimum_holds():
    assert recommend(_load(no_worker=1), 4, 0, 5, {}, 3)[:2] == (1, [])
    assert recommend(_load(), 1, 2, 5, {}, 3)[:2] == (2, [])


def test_only_workers_idle_long_enough_are_retired_and_the_last_keeps_results():
    load = _load(idle=["a", "b", "c"], holding={"a": 0, "b": 5, "c": 0})
    assert recommend(load, 1, 0, 5, {"a": 2, "b": 2, "c": 2}, 3)[:2] == (3, [])
    target, retire, _ = recommend(load, 1, 0, 5, {"a": 3, "b": 4, "c": 1}, 3)
    assert (target, sorted(retire)) == (1, ["a", "b"])
    target, retire, _ = recommend(load, 1, 0, 5, {"a": 3, "b": 3, "c": 3}, 3)
    assert (target, sorted(retire)) == (1, ["a", "c"])  # b holds the results
    assert recommend(load, 1, 2, 5, {"a": 3, "b": 3, "c": 3}, 3)[0] == 2


def slow(path: str, value: int) -> int:
    time.sleep(0.5)
    return record_run(path, value)


def test_a_local_cluster_grows_with_its_tasks_and_shrinks_without_losing_results(
    in_process, tmp_path
):
    log = str(tmp_path / "runs")
    cluster, client = in_process(0)
    adaptive = cluster.adapt(minimum=0, maximum=3, interval="50ms", wait_count=3)
    futures = client.map(slow, [log] * 6, range(6), pure=False)
    wait_until(lambda: len(cluster.scheduler.workers) == 3, timeout=30)
    assert client.gather(futures) == [0, 10, 20, 30, 40, 50]
    # the scheduler forgets a retired worker a moment before the cluster reaps its object
    wait_until(lambda: len(cluster.scheduler.workers) == len(cluster.workers) == 1, timeout=30)
    assert client.gather(futures) == [0, 10, 20, 30, 40, 50]
    assert runs(log) == 6
    actions = [e["action"] for e in events(client, "adaptive", "scale-up")] + [
        e["action"] for e in events(client, "adaptive", "scale-down")
    ]
    assert "scale-up" in actions and "scale-down" in actions
    retired = [e for e in events(client, "all", "remove-worker") if e["reason"] == "retired"]
    assert len(retired) == 2
    cluster.scale(2)  # scale stops adapting, as in Dask
    assert adaptive._task is not None
    wait_until(lambda: adaptive._task.done())
    client.wait_for_workers(2, timeout=30)


def test_adapt_refuses_bad_bounds():
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(TypeError, match="maximum"):
            cluster.adapt(minimum=3, maximum=1)
        with pytest.raises(TypeError, match="minimum"):
            cluster.adapt(minimum=-1)
        with pytest.raises(ValueError, match="interval"):
            cluster.adapt(interval=0)


def test_scale_down_retires_named_workers_and_scale_up_grows(in_process, tmp_path):
    log = str(tmp_path / "runs")
    cluster, client = in_process(2)
    futures = client.map(record_run, [log] * 4, range(4), pure=False)
    client.gather(futures)
    cluster.scale_down(["0"])
    assert list(cluster.workers) == ["1"]
    assert [w["name"] for w in client.scheduler_info()["workers"].values()] == ["1"]
    assert client.gather(futures) == [0, 10, 20, 30] and runs(log) == 4
    cluster.scale_up(3)
    assert len(client.nthreads()) == 3
    cluster.scale_up(1)  # never shrinks
    assert len(cluster.workers) == 3
