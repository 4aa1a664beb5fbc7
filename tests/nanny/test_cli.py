"""``storied worker`` runs its worker under a nanny unless told ``--no-nanny``."""

from __future__ import annotations

import os
import signal
import socket
import sys

import psutil
from engine.helpers import inc, poll
from engine.test_cli import Started, free_port

from storied import Client
from storied.cli.main import _supervised_worker_command, cli

from .helpers import alive, events, workers_by_name


def start_scheduler(tmp_path, started) -> str:
    port = free_port()
    scheduler = Started(["scheduler", "--port", str(port), "--no-ledger"], tmp_path / "s.log")
    started.append(scheduler)
    poll(lambda: "Scheduler at" in scheduler.stderr(), timeout=15)
    return f"tcp://127.0.0.1:{port}"


def test_the_nanny_restarts_its_worker_and_takes_it_along_when_it_dies(tmp_path, started):
    address = start_scheduler(tmp_path, started)
    nanny = Started(["worker", address, "--name", "w"], tmp_path / "worker.log")
    started.append(nanny)
    with Client(address, timeout=5) as client:
        client.wait_for_workers(1, timeout=15)
        first = workers_by_name(client)["w"]
        assert first["nanny_pid"] == nanny.process.pid
        assert psutil.Process(first["pid"]).ppid() == nanny.process.pid

        os.kill(first["pid"], signal.SIGKILL)
        second = poll(
            lambda: (w := workers_by_name(client).get("w")) and w["pid"] != first["pid"] and w,
            timeout=15,
            what="the worker is back",
        )
        assert client.submit(inc, 1).result(timeout=10) == 2
        [removed] = [
            e for e in events(client, "all", "remove-worker") if e["worker"] == first["address"]
        ]
        assert (removed["signal"], removed["exit-code"]) == ("SIGKILL", None)
        assert "was killed by SIGKILL; restarting it" in nanny.stderr()

        nanny.process.kill()
        poll(lambda: not alive(second["pid"]), timeout=5, what="the orphaned worker exited")
        poll(lambda: not client.scheduler_info()["workers"], timeout=10)


def test_no_nanny_runs_the_worker_in_the_command_s_own_process(tmp_path, started):
    address = start_scheduler(tmp_path, started)
    worker = Started(["worker", address, "--no-nanny"], tmp_path / "worker.log")
    started.append(worker)
    with Client(address, timeout=5) as client:
        client.wait_for_workers(1, timeout=15)
        [info] = client.scheduler_info()["workers"].values()
        assert info["pid"] == worker.process.pid
        assert (info["nanny"], info["nanny_pid"]) == (None, None)
        assert worker.interrupt() == 0, worker.stderr()


def test_a_worker_that_cannot_start_fails_the_command(tmp_path, started):
    """As without a nanny: the error, and exit code 1, rather than restarts forever."""
    address = start_scheduler(tmp_path, started)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        nanny = Started(["worker", address, "--port", str(port)], tmp_path / "worker.log")
        started.append(nanny)
        assert nanny.process.wait(timeout=30) == 1
    assert "before joining the scheduler" in nanny.stderr()
    assert "storied worker: worker process" in nanny.stderr()


def test_the_nanny_runs_its_worker_with_the_options_it_was_given():
    """Every option but ``--nanny`` and the token (which travels in the environment)."""
    given = [
        "tls://10.0.0.1:8786",
        "--nthreads",
        "3",
        "--name",
        "w",
        "--host",
        "10.0.0.2",
        "--port",
        "0",
        "--insecure",
        "--tls-ca-file",
        __file__,
        "--auth-token",
        "s3cret-for-this-test",
    ]
    params = cli.commands["worker"].make_context("worker", given).params
    command = _supervised_worker_command(params)
    assert command[:4] == [sys.executable, "-m", "storied", "worker"]
    assert "s3cret" not in command
    rerun = cli.commands["worker"].make_context("worker", command[4:]).params
    assert {**rerun, "auth_token": None} == {**params, "nanny": False, "auth_token": None}
