"""Worker resources on real worker processes, as in Dask's "Worker Resources" docs."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest

from storied import Client, LocalCluster, get_worker
from tests.engine.helpers import poll


def process(d: Any) -> tuple[str, float, float]:
    """Holds its GPU a while; reports where and when it ran."""
    start = time.time()
    time.sleep(0.3)
    return get_worker().name, start, time.time()


def load(filename: str) -> str:
    return f"data of {filename}"


def aggregate(results: list[tuple[str, float, float]]) -> int:
    return len(results)


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one moment (a run ending exactly as another starts: not both)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(stop, -1) for _, stop in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def runs_by_worker(results: list[tuple[str, float, float]]) -> dict[str, list[tuple[float, float]]]:
    by_worker: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, start, stop in results:
        by_worker[name].append((start, stop))
    return by_worker


def test_the_dask_docs_example_uses_each_gpu_once_at_a_time(
    start_worker, bare_client, bare_cluster
):
    start_worker("cpu", 4)
    start_worker("gpu1", 4, "GPU=1")
    start_worker("gpu2", 4, "GPU=2,MEMORY=100e9")
    client = bare_client
    filenames = [f"file-{i}.csv" for i in range(9)]

    data = [client.submit(load, fn) for fn in filenames]
    processed = [client.submit(process, d, resources={"GPU": 1}) for d in data]
    final = client.submit(aggregate, processed, resources={"MEMORY": 70e9})

    assert final.result(timeout=30) == 9
    results = client.gather(processed)
    by_worker = runs_by_worker(results)
    assert set(by_worker) <= {"gpu1", "gpu2"}
    assert max_concurrency(by_worker["gpu1"]) == 1
    assert max_concurrency(by_worker["gpu2"]) <= 2
    assert max_concurrency([run for runs in by_worker.values() for run in runs]) <= 3
    info = client.scheduler_info()["workers"]
    resources = {w["name"]: w["resources"] for w in info.values()}
    assert resources == {"cpu": {}, "gpu1": {"GPU": 1}, "gpu2": {"GPU": 2, "MEMORY": 100e9}}
    state = bare_cluster.scheduler.state
    holders = {state.workers[address].name for address in state.tasks[final.key].who_has}
    assert holders == {"gpu2"}  # the only worker with MEMORY=70e9
    joined = [msg for _, msg in client.get_events("all") if msg.get("action") == "add-worker"]
    assert {"name": "gpu2", "resources": {"GPU": 2, "MEMORY": 100e9}}.items() <= joined[-1].items()


def test_a_task_waits_in_no_worker_until_a_worker_with_the_resource_joins(
    start_worker, bare_client, bare_cluster
):
    start_worker("cpu", 2)
    future = bare_client.submit(process, "x", resources={"TPU": 1}, pure=False)
    state = bare_cluster.scheduler.state
    poll(lambda: future.key in state.tasks and state.tasks[future.key].state == "no-worker")
    assert "needs resources {'TPU': 1.0}" in state.no_worker_reasons[future.key]
    assert future.status == "pending"
    start_worker("tpu", 1, "TPU=1")
    name, _, _ = future.result(timeout=30)
    assert name == "tpu"
    story = [(start, finish) for _, start, finish, *_ in bare_cluster.scheduler.story(future.key)]
    assert ("waiting", "no-worker") in story and ("no-worker", "processing") in story


def test_local_cluster_gives_each_worker_the_resources():
    with (
        LocalCluster(n_workers=2, threads_per_worker=3, resources={"GPU": 1}) as cluster,
        Client(cluster) as client,
    ):
        info = client.scheduler_info()["workers"]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}, {"GPU": 1}]
        futures = [client.submit(process, i, resources={"GPU": 1}) for i in range(6)]
        by_worker = runs_by_worker(client.gather(futures))
        assert all(max_concurrency(runs) == 1 for runs in by_worker.values())
        # on the record: a task claiming resources waits in the worker's "constrained" state
        # (as in Dask) rather than "ready", however briefly
        story = client.story(*[f.key for f in futures])
        constrained = {e.key for e in story if e.finish == "constrained"}
        assert constrained == {f.key for f in futures}


def test_worker_resources_come_from_config():
    from storied import config
    from storied.worker.server import Worker

    with config.set({"worker.resources": "GPU=3 FPGA=1"}):
        assert Worker("tcp://127.0.0.1:1").resources == {"GPU": 3, "FPGA": 1}
    with config.set({"worker.resources": {"GPU": 2}}):
        assert Worker("tcp://127.0.0.1:1", resources={"GPU": 1}).resources == {"GPU": 1}


@pytest.mark.parametrize(
    ("resources", "error"),
    [
        ("GPU", TypeError),
        (["GPU"], TypeError),
        ({"GPU": "one"}, TypeError),
        ({1: 1}, TypeError),
        ({"GPU": -1}, ValueError),
        ({"GPU": float("nan")}, ValueError),
    ],
)
def test_bad_resources_are_refused_at_the_caller(client, resources, error):
    with pytest.raises(error, match="resources"):
        client.submit(process, 1, resources=resources)
    with pytest.raises(error, match="resources"):
        client.map(process, [1, 2], resources=resources)


@pytest.mark.parametrize("text", ["GPU", "GPU=many", "=2"])
def test_bad_worker_resources_are_refused(text):
    from storied.worker.server import Worker

    with pytest.raises(ValueError, match=r"NAME=AMOUNT|not a number"):
        Worker("tcp://127.0.0.1:1", resources=text)


def test_the_worker_command_refuses_bad_resources_before_connecting():
    from click.testing import CliRunner

    from storied.cli.main import cli

    assert "--resources" in CliRunner().invoke(cli, ["worker", "--help"]).output
    result = CliRunner().invoke(cli, ["worker", "tcp://127.0.0.1:1", "--resources", "GPU"])
    assert result.exit_code == 2
    assert "--resources" in result.output and "NAME=AMOUNT" in result.output


def timed(i: Any) -> tuple[float, float]:
    start = time.time()
    time.sleep(0.15)
    return start, time.time()


@pytest.mark.parametrize("system", ["storied", "dask"])
def test_one_gpu_and_three_threads_behave_as_in_dask(system):
    """The same program on both: GPU tasks one at a time, the others alongside them."""
    if system == "dask":
        distributed = pytest.importorskip("distributed")
        make_cluster, make_client = distributed.LocalCluster, distributed.Client
        extra: dict[str, Any] = {"processes": False, "dashboard_address": ":0"}
    else:
        make_cluster, make_client, extra = LocalCluster, Client, {}
    with (
        make_cluster(n_workers=1, threads_per_worker=3, resources={"GPU": 1}, **extra) as cluster,
        make_client(cluster) as client,
    ):
        gpu = [client.submit(timed, i, resources={"GPU": 1}) for i in range(4)]
        cpu = [client.submit(timed, -i - 1) for i in range(4)]
        gpu_runs, cpu_runs = client.gather(gpu), client.gather(cpu)
    assert max_concurrency(gpu_runs) == 1
    assert max_concurrency(gpu_runs + cpu_runs) >= 2


def test_dask_annotations_place_graph_tasks_by_resources(start_worker, bare_client):
    """The dask-graph path sends the same task options: ``dask.annotate(resources=...)``."""
    dask = pytest.importorskip("dask")
    start_worker("plain", 2)
    start_worker("gpu", 2, "GPU=1")
    with dask.annotate(resources={"GPU": 1}):
        parts = [dask.delayed(process)(i, dask_key_name=f"annotated-{i}") for i in range(3)]
    futures = bare_client.compute(parts, optimize_graph=False)
    results = bare_client.gather(futures)
    assert {name for name, _, _ in results} == {"gpu"}
    assert max_concurrency([(start, stop) for _, start, stop in results]) == 1
    high = bare_client.compute(dask.delayed(process)("high"), priority=5)
    assert high.result(timeout=30)[0] in {"plain", "gpu"}
