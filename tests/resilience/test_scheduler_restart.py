"""A scheduler SIGKILLed and restarted on its port: the client and the workers come back.

Real processes: ``storied scheduler`` and ``storied worker`` (under its nanny), the client in
this process. While the scheduler is gone, calls wait for it instead of failing, and a future
that had finished still answers from the client.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from engine.helpers import inc, poll
from engine.test_cli import Started, free_port, started
from nanny.helpers import alive

from storied import Client, config
from storied.exceptions import CancelledError

cloudpickle.register_pickle_by_value(sys.modules[__name__])
__all__ = ["started"]

#: how long the client and the workers keep trying; short, so that giving up is quick to test
RECONNECT_TIMEOUT = "20s"
RESTARTS = 20


class RestartableScheduler:
    """``storied scheduler`` on a fixed port, which the test kills and starts again."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.runs: list[Started] = []

    def start(self) -> Started:
        run = Started(
            ["scheduler", "--port", str(self.port), "--no-ledger", "--dashboard-address", "none"],
            self.tmp_path / f"scheduler-{len(self.runs)}.log",
        )
        self.runs.append(run)
        return run

    def kill(self) -> None:
        run = self.runs[-1]
        run.process.send_signal(signal.SIGKILL)
        run.process.wait(timeout=10)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[RestartableScheduler]:
    scheduler = RestartableScheduler(tmp_path)
    scheduler.start()
    yield scheduler
    for run in scheduler.runs:
        run.kill()


@pytest.fixture
def worker(scheduler: RestartableScheduler, tmp_path: Path) -> Iterator[Started]:
    """A worker under its nanny, which keep trying to rejoin for ``RECONNECT_TIMEOUT``."""
    env = {"STORIED_COMM__RECONNECT_TIMEOUT": RECONNECT_TIMEOUT}
    nanny = Started(["worker", scheduler.address, "--nthreads", "1"], tmp_path / "w.log", env)
    yield nanny
    nanny.kill()


@pytest.fixture
def client(scheduler: RestartableScheduler) -> Iterator[Client]:
    with (
        config.set({"comm.reconnect-timeout": RECONNECT_TIMEOUT}),
        Client(scheduler.address, timeout=15) as client,
    ):
        yield client


def reconnect_events(client: Client) -> list[dict]:
    return [m for _, m in client.get_events(client.id) if m["action"] == "reconnect-client"]


def test_the_client_comes_back_after_each_of_20_scheduler_kills(scheduler, worker, client):
    client.wait_for_workers(1, timeout=20)
    for attempt in range(RESTARTS):
        finished = client.submit(inc, attempt)
        assert finished.result(timeout=20) == attempt + 1
        before = client.scheduler_info()["id"]

        scheduler.kill()
        poll(lambda: client.status == "connecting", timeout=5, what="the client noticed")
        # no scheduler now: a finished future answers from the client, calls wait
        assert finished.result(timeout=1) == attempt + 1
        assert finished.exception(timeout=1) is None and finished.traceback(timeout=1) is None
        meanwhile = client.submit(inc, -attempt, pure=False)
        info: dict = {}
        asking = threading.Thread(target=ask_scheduler_info, args=(client, info))
        asking.start()
        scheduler.start()

        assert meanwhile.result(timeout=30) == 1 - attempt, f"restart {attempt + 1}"
        asking.join(timeout=30)
        assert info["id"] not in (None, before), "asked while reconnecting: the new scheduler"
        with pytest.raises(CancelledError, match="scheduler-connection-lost"):
            finished.result(timeout=5)
        assert finished.status == "cancelled"
        [event] = reconnect_events(client)
        assert (event["new-scheduler"], event["cancelled"]) == (True, 1)
    assert client.submit(inc, 41).result(timeout=20) == 42


def ask_scheduler_info(client: Client, into: dict) -> None:
    into.update(client.scheduler_info())


def test_a_connection_closed_during_the_handshake_is_retried(scheduler, client):
    """What a scheduler starting up (or a proxy in front of it) can do: accept the
    connection, then close or reset it before the handshake is over."""
    scheduler.kill()
    poll(lambda: client.status == "connecting", timeout=5, what="the client noticed")
    impostor = socket.create_server(("127.0.0.1", scheduler.port))
    impostor.settimeout(5)
    for reset in (False, True, False, True):
        conn, _ = impostor.accept()
        if reset:  # an RST instead of a FIN: "connection reset by peer"
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    impostor.close()
    assert client.status == "connecting", "four failed handshakes did not make it give up"
    scheduler.start()
    poll(lambda: client.status == "running", timeout=20, what="the client reconnected")
    [event] = reconnect_events(client)
    # each accepted connection failed an attempt (an early reset may fail the connect itself,
    # which retries within its attempt)
    assert event["attempts"] >= 3 and event["new-scheduler"] is True


def test_without_a_scheduler_the_client_gives_up_and_the_worker_exits(tmp_path, started):
    """After ``comm.reconnect-timeout`` the client closes, as Dask's does, and a worker (and
    its nanny) whose scheduler is gone for good exit: none is left behind, running a task."""
    scheduler = RestartableScheduler(tmp_path)
    started.append(scheduler.start())
    env = {"STORIED_COMM__RECONNECT_TIMEOUT": "1s"}
    started.append(Started(["worker", scheduler.address], tmp_path / "w.log", env))
    with config.set({"comm.reconnect-timeout": "1s"}), Client(scheduler.address) as client:
        client.wait_for_workers(1, timeout=20)
        [info] = client.scheduler_info()["workers"].values()
        pids = [info["pid"], info["nanny_pid"]]
        busy = client.submit(sleep_forever, str(tmp_path / "started"))
        poll(lambda: (tmp_path / "started").exists(), timeout=20, what="the task started")

        scheduler.kill()
        poll(lambda: client.status == "closed", timeout=10, what="the client gave up")
        with pytest.raises(CancelledError, match="scheduler-connection-lost: could not"):
            busy.result(timeout=5)
        with pytest.raises(RuntimeError, match="could not reconnect within 1s"):
            client.scheduler_info()
        with pytest.raises(RuntimeError, match="the client is closed"):
            client.submit(inc, 1)
        poll(
            lambda: not [pid for pid in pids if alive(pid)],
            timeout=1 + 5,
            what="the worker and its nanny exited",
        )


def sleep_forever(started: str) -> None:
    """A task that runs until its worker stops it; it says when it started."""
    Path(started).touch()
    threading.Event().wait()
