"""A scheduler SIGKILLed and restarted on its port: the client and the workers come back.

Real processes: ``storied scheduler`` and ``storied worker`` (under its nanny), the client in
this process. While the scheduler is gone, calls wait for it instead of failing, and a future
that had finished still answers from the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import operator
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from engine.helpers import inc, poll
from engine.test_cli import STORIED, Started, clean_environ, free_port, started
from nanny.helpers import alive

from storied import Client, config
from storied.exceptions import CancelledError

cloudpickle.register_pickle_by_value(sys.modules[__name__])
__all__ = ["started"]

#: how long the client and the workers keep trying; short, so that giving up is quick to test
RECONNECT_TIMEOUT = "20s"
RESTARTS = 20


STORIED_SCHEDULER = [STORIED, "scheduler", "--no-ledger", "--dashboard-address", "none"]
DASK = str(Path(sys.executable).with_name("dask"))
DASK_SCHEDULER = [DASK, "scheduler"]


class RestartableScheduler:
    """A scheduler process on a fixed port, which the test kills and starts again."""

    def __init__(self, tmp_path: Path, command: list[str] = STORIED_SCHEDULER) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.command = command
        self.tmp_path = tmp_path
        self.runs: list[subprocess.Popen[bytes]] = []
        #: processes to end with it
        self.others: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.runs.append(
            self.run([*self.command, "--port", str(self.port)], f"scheduler-{len(self.runs)}")
        )

    def run(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        """``command`` (killed at ``close``), logging to ``name.log``."""
        with (self.tmp_path / f"{name}.log").open("w") as log:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=clean_environ(),
            )

    def kill(self) -> None:
        self.runs[-1].kill()
        self.runs[-1].wait(timeout=10)

    def close(self) -> None:
        for run in self.runs + self.others:
            run.kill()
            run.wait(timeout=10)


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[RestartableScheduler]:
    scheduler = RestartableScheduler(tmp_path)
    scheduler.start()
    yield scheduler
    scheduler.close()


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
    [worker_address] = client.scheduler_info()["workers"]
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
        answers: dict = {}
        asking = threading.Thread(target=ask_the_scheduler, args=(client, finished.key, answers))
        asking.start()
        scheduler.start()

        assert meanwhile.result(timeout=30) == 1 - attempt, f"restart {attempt + 1}"
        asking.join(timeout=30)
        assert answers["info"]["id"] != before, "asked while reconnecting: the new scheduler"
        # the worker's own record of the task outlives the old scheduler; the new one has none
        assert {entry.where for entry in answers["story"]} <= {worker_address}
        actions = [msg["action"] for _, msg in answers["events"]]
        assert actions == ["add-client", "reconnect-client"]
        with pytest.raises(CancelledError, match="scheduler-connection-lost"):
            finished.result(timeout=5)
        assert finished.status == "cancelled"
        [event] = reconnect_events(client)
        assert (event["new-scheduler"], event["cancelled"]) == (True, 1)
    assert client.submit(inc, 41).result(timeout=20) == 42


def ask_the_scheduler(client: Client, key: str, answers: dict) -> None:
    """Calls made while the client reconnects: each waits for the link, none raises."""
    answers["info"] = client.scheduler_info()
    answers["story"] = client.story(key)
    answers["events"] = client.get_events(client.id)


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
    scheduler.start()
    env = {"STORIED_COMM__RECONNECT_TIMEOUT": "1s"}
    started.append(Started(["worker", scheduler.address], tmp_path / "w.log", env))
    with (
        config.set({"comm.reconnect-timeout": "1s"}),
        Client(scheduler.address) as client,
        contextlib.closing(scheduler),
    ):
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


@pytest.mark.parametrize("library", ["storied", "dask.distributed"])
def test_futures_of_a_restarted_scheduler_are_cancelled_as_in_dask(library, tmp_path):
    """The same user code against dask.distributed itself: once the client is back, a future
    it held is cancelled for reason ``scheduler-connection-lost``. Dask cancels it the moment
    the link drops; storied only once it knows the scheduler is a new one."""
    lib = importlib.import_module(library)
    scheduler = RestartableScheduler(
        tmp_path, STORIED_SCHEDULER if library == "storied" else DASK_SCHEDULER
    )
    scheduler.start()
    worker = [STORIED if library == "storied" else DASK, "worker", scheduler.address]
    scheduler.others.append(scheduler.run([*worker, "--no-nanny"], "worker"))
    with contextlib.closing(scheduler), lib.Client(scheduler.address, timeout=15) as client:
        client.wait_for_workers(1, timeout=30)
        future = client.submit(operator.add, 40, 1)  # small: storied sends it along
        assert future.result(timeout=5) == 41
        scheduler.kill()
        poll(lambda: client.status == "connecting", timeout=5, what="the client noticed")
        if library == "storied":
            assert future.result(timeout=1) == 41, "storied: it answers until it knows"
        scheduler.start()
        poll(lambda: client.status == "running", timeout=30, what="the client is back")
        poll(lambda: future.status == "cancelled", timeout=5, what="the future is cancelled")
        with pytest.raises(Exception, match="scheduler-connection-lost") as raised:
            future.result(timeout=5)
        assert type(raised.value).__name__.endswith("CancelledError")


def test_an_asynchronous_client_waits_for_the_new_scheduler_too(scheduler, recwarn):
    async def main() -> None:
        with config.set({"comm.reconnect-timeout": RECONNECT_TIMEOUT}):
            async with Client(scheduler.address, asynchronous=True, timeout=15) as client:
                before = (await client.scheduler_info())["id"]
                scheduler.kill()
                await asyncio.wait_for(status_becomes(client, "connecting"), 5)
                asking = asyncio.ensure_future(client.scheduler_info())
                scheduler.start()
                info = await asyncio.wait_for(asking, 30)
                assert info["id"] != before
                [event] = [
                    msg
                    for _, msg in await client.get_events(client.id)
                    if msg["action"] == "reconnect-client"
                ]
                assert event["new-scheduler"] is True

    asyncio.run(main())
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def status_becomes(client: Client, status: str) -> None:
    while client.status != status:
        await asyncio.sleep(0.01)
