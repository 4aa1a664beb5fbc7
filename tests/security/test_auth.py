"""Nobody without the token gets in, nothing is unpickled before they prove they hold it.

Real TCP on loopback against a real in-process cluster; the intruders are raw sockets that
speak our framing by hand, so nothing here relies on our own client behaving.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from storied import Client, LocalCluster
from storied.cli.main import cli
from storied.comm import Security, connect
from storied.protocol import handshake
from storied.protocol.frames import PLAIN_OPENING
from storied.protocol.serialize import dumps
from tests.security.conftest import RawPeer, wait_for


def inc(x: int) -> int:
    return x + 1


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: the file appearing means someone ran our pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.path,)


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalCluster]:
    """An in-process cluster with LocalCluster's default: a fresh random token."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        yield cluster


@pytest.fixture
def comm_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level("INFO", logger="storied.comm")
    return caplog


def _refusals(caplog: pytest.LogCaptureFixture, port: int) -> list[str]:
    """Messages in which the listener refused or dropped the peer at local ``port``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "storied.comm" and f"127.0.0.1:{port}:" in r.getMessage()
    ]


def test_local_cluster_makes_its_own_token_and_listens_on_loopback(guarded):
    token = guarded.security.token
    assert token and len(token) >= 32
    assert guarded.scheduler_address.startswith("tcp://127.0.0.1:")
    assert "***" in repr(guarded.security) and token not in repr(guarded.security)
    with Client(guarded) as client:
        assert client.submit(inc, 1).result(timeout=10) == 2
    with LocalCluster(n_workers=0, processes=False) as other:
        assert other.security.token != token
        with pytest.raises(handshake.AuthenticationError, match="wrong or missing auth token"):
            Client(guarded.scheduler_address, security=other.security, timeout=5)


def test_without_the_token_no_connection_no_submit_no_record(guarded):
    address = guarded.scheduler_address
    with pytest.raises(handshake.AuthenticationError, match="requires an auth token"):
        Client(address, security=Security(), timeout=5)
    # Skipping the handshake and going straight for the API gets nowhere either.
    stranger = "Client-stranger"
    requests = [
        {"op": "register-client", "client": stranger, "topics": []},
        [{"op": "request", "id": 0, "method": "get-events", "kwargs": {}}],
        [{"op": "request", "id": 1, "method": "story", "kwargs": {"keys": ["x"]}}],
    ]
    for request in requests:
        with RawPeer(address) as peer:
            assert peer.read()["op"] == "hello"
            peer.send(request)
            reply = peer.read()
            assert reply == {"op": "refused", "reason": "the peer did not answer the handshake"}
            assert peer.closed_by_server()
    assert stranger not in guarded.scheduler.clients
    assert stranger not in repr(guarded.scheduler.get_events())
    for worker in guarded.workers.values():
        with RawPeer(worker.address) as peer:
            peer.read()
            peer.send({"op": "get_data", "keys": []})
            assert peer.read()["op"] == "refused"


@pytest.mark.parametrize("target", ["scheduler", "worker"])
def test_nothing_is_unpickled_before_authentication(guarded, target, tmp_path, comm_log):
    worker = next(iter(guarded.workers.values()))
    address = guarded.scheduler_address if target == "scheduler" else worker.address
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_TouchOnUnpickle(marker))
    key = f"planted-via-{target}"
    update_data = {"op": "update_data", "data": {key: payload}}
    graph = [
        {
            "op": "update-graph",
            "tasks": [[key, "f", payload, [], None]],
            "functions": {"f": payload},
            "wanted": [key],
            "stimulus_id": "x",
        }
    ]
    wrong_answer = dumps({"op": "answer", "nonce": os.urandom(32), "mac": os.urandom(32)})
    attacks = {
        "a pickle instead of the handshake answer": [payload],
        "a wrong answer with pickles right behind it": [
            wrong_answer,
            dumps(update_data),
            dumps(graph),
            payload,
        ],
        "no handshake at all, straight to work": [dumps(update_data), dumps(graph)],
    }
    for name, frames in attacks.items():
        with RawPeer(address) as peer:
            peer.read()
            peer.send_raw(b"".join(_framed(frame) for frame in frames))
            assert peer.closed_by_server(), name
            assert _refusals(comm_log, peer.local_port), name
        assert not marker.exists(), name
    with RawPeer(address) as peer:  # a wrong answer, then pickles once refused
        peer.read()
        peer.send_raw(_framed(wrong_answer))
        assert peer.read()["op"] == "refused"
        with contextlib.suppress(OSError):  # the server may already have hung up
            for frame in (dumps(update_data), dumps(graph), payload):
                peer.send_raw(_framed(frame))
        assert peer.closed_by_server()
    assert not marker.exists()
    assert key not in worker.data
    # Control: the same bytes do run once a peer has authenticated; the handshake is all
    # that stands between a stranger and code execution on the worker.
    _with_token(guarded, lambda comm: comm.request(update_data, timeout=5), worker.address)
    wait_for(marker.exists, what="the control pickle to run")


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _with_token(cluster: LocalCluster, action, address: str):
    async def run():
        comm = await connect(address, cluster.security, timeout=5)
        try:
            return await action(comm)
        finally:
            await comm.close()

    return cluster._loop_thread.run(run())


def test_wrong_token_is_refused_and_logged(guarded, comm_log):
    with RawPeer(guarded.scheduler_address) as peer:
        peer.send(handshake.client_answer(peer.read(), "not-the-token"))
        assert peer.read() == {"op": "refused", "reason": "wrong or missing auth token"}
        assert peer.closed_by_server()
        assert _refusals(comm_log, peer.local_port) == [
            f"Refused connection from tcp://127.0.0.1:{peer.local_port}: "
            "wrong or missing auth token"
        ]
    warnings = [r for r in comm_log.records if r.levelname == "WARNING"]
    assert warnings and all(guarded.security.token not in r.getMessage() for r in warnings)


def test_a_recorded_answer_cannot_be_replayed(guarded, comm_log):
    token = guarded.security.token
    with RawPeer(guarded.scheduler_address) as genuine:
        recorded = genuine.send(handshake.client_answer(genuine.read(), token))
        assert genuine.read()["op"] == "welcome"
    with RawPeer(guarded.scheduler_address) as replayer:
        assert replayer.read()["op"] == "hello"
        replayer.send_raw(recorded)
        assert replayer.read()["op"] == "refused"
        assert replayer.closed_by_server()
        assert _refusals(comm_log, replayer.local_port)


class _RogueServer:
    """Plays a scheduler that does not know the token: it opens with ``hello`` and answers
    every client with ``welcome`` (optionally a replayed genuine one)."""

    def __init__(self, hello: dict, welcome: dict) -> None:
        self.hello, self.welcome = hello, welcome
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.listening.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve_one, daemon=True)
        self.thread.start()

    def _serve_one(self) -> None:
        sock, _ = self.listening.accept()
        with sock, contextlib.suppress(OSError):  # the client may hang up at any point
            sock.recv(len(PLAIN_OPENING), socket.MSG_WAITALL)  # what a plain client sends first
            frame = dumps(self.hello)
            sock.sendall(len(frame).to_bytes(4, "big") + frame)
            sock.recv(4096)
            frame = dumps(self.welcome)
            sock.sendall(len(frame).to_bytes(4, "big") + frame)
            sock.recv(4096)

    def close(self) -> None:
        self.listening.close()
        self.thread.join(5)


def test_a_server_without_the_token_cannot_impersonate_the_scheduler(guarded):
    token = guarded.security.token
    with RawPeer(guarded.scheduler_address) as genuine:
        hello = genuine.read()
        genuine.send(handshake.client_answer(hello, token))
        genuine_welcome = genuine.read()
    impostors = [  # (what the impostor does, its hello, its welcome, what the client says)
        (
            "claims auth, proves nothing",
            {**hello, "nonce": os.urandom(32)},
            {"op": "welcome"},
            "could not prove it holds the token",
        ),
        (
            "replays a genuine exchange",
            hello,
            genuine_welcome,
            "could not prove it holds the token",
        ),
        (
            "asks for no token at all",
            {**hello, "auth": False},
            {"op": "welcome"},
            "does not ask for one",
        ),
    ]
    for name, rogue_hello, rogue_welcome, complaint in impostors:
        rogue = _RogueServer(rogue_hello, rogue_welcome)
        try:
            with pytest.raises(handshake.AuthenticationError, match=complaint):
                Client(rogue.address, security=Security(token=token), timeout=5)
        finally:
            rogue.close()
        assert not rogue.thread.is_alive(), name


def test_cli_refuses_all_interfaces_without_credentials(monkeypatch):
    monkeypatch.delenv("STORIED_AUTH_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["scheduler", "--host", "0.0.0.0", "--no-ledger"])
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without credentials" in result.output


def test_cli_scheduler_on_all_interfaces_with_a_token_admits_only_token_holders():
    env = {**os.environ, "STORIED_AUTH_TOKEN": ""}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storied",
            "scheduler",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--no-ledger",
            "--auth-token",
            "s3cret-for-this-test",
        ],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        port = _listening_port(process)
        address = f"tcp://127.0.0.1:{port}"
        with Client(address, security=Security(token="s3cret-for-this-test"), timeout=10) as c:
            assert c.scheduler_info()["address"].endswith(f":{port}")
        with pytest.raises(handshake.AuthenticationError):
            Client(address, security=Security(), timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def _listening_port(process: subprocess.Popen[str], timeout: float = 20.0) -> int:
    """The port from the scheduler's 'Scheduler at ...' log line on stderr."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the scheduler did not report its address within {timeout}s")
        found = re.search(r"Scheduler at tcp://0\.0\.0\.0:(\d+)", line)
        if found:
            return int(found.group(1))
