"""Starting, connecting to, resizing and closing clusters (issue 2, points 1 and 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import psutil
import pytest

from storied import Client, LocalCluster, Scheduler

from .helpers import inc, poll, wait_for_file, where_am_i


def storied_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("storied")}


def test_the_public_names_import():
    import storied
    from storied import Client, Future, LocalCluster, as_completed, get_worker, wait

    for name in ("Client", "LocalCluster", "Future", "get_worker", "wait", "as_completed"):
        assert name in storied.__all__
    assert all(
        callable(obj) for obj in (Client, Future, LocalCluster, as_completed, get_worker, wait)
    )


def test_client_by_cluster_object(cluster):
    with Client(cluster) as client:
        assert client.scheduler_address == cluster.scheduler_address
        assert client.submit(inc, 1).result(timeout=10) == 2


def test_client_by_address(cluster):
    with Client(cluster.scheduler_address, security=cluster.security) as client:
        assert client.submit(inc, 2).result(timeout=10) == 3
        assert client.cluster is None


def test_local_cluster_exposes_its_scheduler_and_workers(cluster):
    assert isinstance(cluster.scheduler, Scheduler)
    assert cluster.scheduler_address == cluster.scheduler.address
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert len(cluster.workers) == 2
    assert len(cluster.scheduler.workers) == 2
    assert all(link.pid != psutil.Process().pid for link in cluster.scheduler.workers.values()), (
        "processes=True runs each worker in its own process"
    )


def test_client_with_no_address_starts_and_closes_its_own_cluster():
    with Client(n_workers=1, threads_per_worker=1) as client:
        assert isinstance(client.cluster, LocalCluster)
        assert client.submit(inc, 10).result(timeout=10) == 11
        [process] = [w.process for w in client.cluster.workers.values()]
    assert client.cluster.status == "closed"
    poll(lambda: process.poll() is not None)


def test_in_process_workers_run_tasks_and_leave_no_threads():
    before = storied_threads()
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False) as cluster:
        assert {type(w).__name__ for w in cluster.workers.values()} == {"Worker"}
        with Client(cluster) as client:
            futures = client.map(inc, range(20))
            assert client.gather(futures) == list(range(1, 21))
            info = client.scheduler_info()
            assert sorted(w["nthreads"] for w in info["workers"].values()) == [2, 2]
        assert storied_threads() > before
    poll(lambda: storied_threads() <= before)


def cluster_client_steps(local_cluster_class, client_class):
    """get_client and wait_for_workers: the same steps for storied and Dask."""
    seen = []
    with local_cluster_class(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as local:
        made = local.get_client()
        seen.append(isinstance(made, client_class) and made.cluster is local)
        with made.as_current():
            seen.append(local.get_client() is made)  # the current client, if it is ours
        local.wait_for_workers(1, timeout=10)
        try:
            local.wait_for_workers(2, timeout=0.1)
        except TimeoutError:
            seen.append("TimeoutError")
        try:
            local.wait_for_workers(0)
        except ValueError:
            seen.append("ValueError")
        seen.append(made.submit(inc, 1).result())
        made.close()
    return seen


def test_local_cluster_get_client_and_wait_for_workers_as_dask():
    import distributed

    ours = cluster_client_steps(LocalCluster, Client)
    assert ours == cluster_client_steps(distributed.LocalCluster, distributed.Client)
    assert ours == [True, True, "TimeoutError", "ValueError", 2]


def test_scale_up_and_down(tmp_path):
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        cluster.scale(2)
        info = client.scheduler_info()
        assert len(info["workers"]) == 2
        names = {w["name"] for w in info["workers"].values()}
        places = client.gather(
            [client.submit(where_am_i, workers=[name], pure=False) for name in names]
        )
        assert {name for _, name in places} == names

        leaving = cluster.workers["1"]
        scattered = client.scatter(41, workers=["1"])
        cluster.scale(1)
        assert len(client.scheduler_info()["workers"]) == 1
        assert leaving.process.poll() is not None, "scale(1) stopped the surplus process"
        poll(lambda: scattered.status == "lost")
        assert client.submit(inc, 41).result(timeout=10) == 42


def test_a_killed_worker_s_task_runs_again_elsewhere(tmp_path):
    gate = tmp_path / "gate"
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        future = client.submit(wait_for_file, str(gate))
        tasks = cluster.scheduler.state.tasks
        victim = poll(lambda: getattr(tasks.get(future.key), "processing_on", None))
        os.kill(client.scheduler_info()["workers"][victim]["pid"], signal.SIGKILL)
        poll(
            lambda: victim not in client.scheduler_info()["workers"],
            what="the scheduler noticed the dead worker",
        )
        gate.touch()
        assert future.result(timeout=10) != victim
        [event] = [e for _, e in client.get_events(victim) if e["action"] == "remove-worker"]
        assert event["lost-tasks"] == [future.key]


def test_close_leaves_no_process_thread_or_socket():
    """In a fresh interpreter, so nothing else this test session started gets in the way."""
    script = textwrap.dedent("""
        import json, threading, time
        import psutil
        from storied import Client, LocalCluster

        def inc(x):
            return x + 1

        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
            pids = [worker.pid for worker in cluster.workers.values()]
            with Client(cluster) as client:
                assert client.submit(inc, 1).result(timeout=10) == 2

        me = psutil.Process()
        deadline = time.monotonic() + 5
        while True:
            left = {
                "threads": [t.name for t in threading.enumerate()
                            if t.name.startswith("storied")],
                "children": [p.pid for p in me.children(recursive=True)],
                "worker_pids_alive": [pid for pid in pids if psutil.pid_exists(pid)],
                "sockets": [str(c.laddr) for c in me.net_connections("inet")],
            }
            if not any(left.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        print(json.dumps(left))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    left = json.loads(result.stdout.splitlines()[-1])
    assert left == {"threads": [], "children": [], "worker_pids_alive": [], "sockets": []}


def test_context_managers_close_what_they_opened():
    with LocalCluster(n_workers=1, processes=False) as cluster:
        with Client(cluster) as client:
            assert client.status == "running"
        assert client.status == "closed"
        with pytest.raises(RuntimeError, match="closed"):
            client.submit(inc, 1)
    assert cluster.status == "closed"
    assert cluster.scheduler.status == "closed"


def test_closing_a_client_while_it_reconnects_ends_its_tasks() -> None:
    cluster = LocalCluster(n_workers=0, processes=False)
    client = Client(cluster)
    cluster.close()  # the scheduler goes away: the client keeps trying to reconnect
    poll(lambda: client.status == "connecting", what="the client noticed and reconnects")
    client.close()
    assert client.status == "closed"
    assert not client._tasks
