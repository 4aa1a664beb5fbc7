"""No listener beyond loopback without a token or TLS unless the caller says ``insecure=True``;
tokens are checked where they are given; a plain client meeting a TLS listener (or the
reverse) is told so at once."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import psutil
import pytest
from click.testing import CliRunner

from storied import Client, LocalCluster, Security
from storied.cli.main import cli
from storied.comm import connect
from storied.comm.core import CommClosedError, Listener
from storied.comm.security import (
    MIN_TOKEN_LENGTH,
    InsecureListenerError,
    check_listener,
    is_loopback,
)
from storied.record.ledger import Ledger
from storied.scheduler.server import Scheduler
from storied.worker.server import Worker

TOKEN = "listener-test-token-0123"
#: every way to say "all interfaces" or "a name that may not be this machine only"
UNSAFE_HOSTS = ["0.0.0.0", "", "::", "[::]", "example.invalid", socket.gethostname()]


def _outside_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not is_loopback(address.address):
                return address.address
    return None


@pytest.fixture
def outside_address() -> str:
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    return address


@pytest.mark.parametrize("host", UNSAFE_HOSTS)
def test_a_scheduler_refuses_to_listen_beyond_loopback_without_credentials(host):
    async def start() -> None:
        await Scheduler(host, 0, security=Security()).start()

    with pytest.raises(InsecureListenerError, match="insecure=True"):
        asyncio.run(start())


def test_a_worker_refuses_to_listen_beyond_loopback_without_credentials():
    async def start() -> None:
        # the refusal comes before the worker looks for its scheduler (there is none here)
        await Worker("tcp://127.0.0.1:1", host="0.0.0.0", security=Security()).start()

    with pytest.raises(InsecureListenerError, match=r"refusing to listen on '0\.0\.0\.0'"):
        asyncio.run(start())


@pytest.mark.parametrize("processes", [False, True])
def test_a_local_cluster_without_security_refuses_all_interfaces(processes):
    with pytest.raises(InsecureListenerError):
        LocalCluster(
            n_workers=1,
            processes=processes,
            host="0.0.0.0",
            security=False,
            dashboard_address=None,
        )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_needs_no_credentials(host):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")

    async def start_and_close() -> None:
        listener = Listener(f"tcp://{host}:0", _echo)
        await listener.start()
        await listener.close()

    assert is_loopback(host)
    check_listener(host, Security())  # does not raise
    asyncio.run(start_and_close())


async def _echo(comm) -> None:
    while True:
        await comm.send(await comm.read())


@pytest.mark.parametrize("processes", [False, True])
def test_insecure_true_listens_beyond_loopback_and_says_so(outside_address, caplog, processes):
    """The worker processes get ``--insecure`` (their WARNING is on their own stderr)."""
    caplog.set_level(logging.WARNING, logger="storied.comm")
    with (
        LocalCluster(
            n_workers=1,
            processes=processes,
            host=outside_address,
            security=False,
            insecure=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        assert cluster.scheduler_address.startswith(f"tcp://{outside_address}:")
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
        [worker] = client.scheduler_info()["workers"]
        assert worker.startswith(f"tcp://{outside_address}:")
    warnings = [r for r in caplog.records if "insecure=True" in r.getMessage()]
    assert len(warnings) == (1 if processes else 2)  # the scheduler's port (and the worker's)
    assert all(r.levelno == logging.WARNING for r in warnings)


def test_a_token_allows_listening_beyond_loopback(outside_address):
    with (
        LocalCluster(
            n_workers=1, processes=False, host=outside_address, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert client.submit(sum, [4, 5]).result(timeout=10) == 9
        with pytest.raises(ConnectionError, match="requires an auth token"):
            Client(cluster.scheduler_address, security=Security(), timeout=5)


# ---------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("command", [["scheduler", "--no-ledger"], ["worker", "tcp://x:1"]])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "some-host-name"])
def test_the_cli_refuses_every_unsafe_bind_without_credentials(monkeypatch, command, host):
    monkeypatch.delenv("STORIED_AUTH_TOKEN", raising=False)
    result = CliRunner().invoke(cli, [*command, "--host", host])
    assert result.exit_code == 2
    assert f"refusing to listen on {host} without credentials" in result.output


@pytest.mark.parametrize(
    "token, complaint",
    [("short", "at least 16"), (TOKEN + "\n", "control characters"), (TOKEN + "\0", "\\x00")],
)
def test_the_cli_refuses_a_bad_token(token, complaint):
    args = ["scheduler", "--no-ledger", "--host", "0.0.0.0", "--auth-token", token]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert complaint in result.output
    assert token.strip() not in result.output  # the secret is not echoed


def test_the_dashboard_cli_refuses_a_bad_token(tmp_path):
    ledger = Ledger(tmp_path / "history.db")
    ledger.start_run({"address": "tcp://127.0.0.1:1"})
    ledger.close()
    args = ["dashboard", "--ledger", str(tmp_path / "history.db"), "--host", "0.0.0.0"]
    result = CliRunner().invoke(cli, [*args, "--auth-token", "short"], env={})
    assert result.exit_code == 2
    assert "at least 16" in result.output


# ---------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    "token, error, complaint",
    [
        ("", ValueError, "at least 16"),
        ("x" * (MIN_TOKEN_LENGTH - 1), ValueError, "has 15 characters"),
        (TOKEN + "\0", ValueError, "control characters"),
        (TOKEN + "\n", ValueError, "control characters"),
        ("\x1b[31m" + TOKEN, ValueError, "control characters"),
        (TOKEN + "\u200b", ValueError, "control characters"),  # zero-width space
        (TOKEN.encode(), TypeError, "must be a str"),
        (12345678901234567890, TypeError, "must be a str"),
    ],
)
def test_bad_tokens_are_refused_where_they_are_given(token, error, complaint):
    with pytest.raises(error, match=complaint):
        Security(token=token)


def test_good_tokens_are_accepted():
    assert Security(token="x" * MIN_TOKEN_LENGTH).token == "x" * MIN_TOKEN_LENGTH
    assert Security(token="pässwörter-mit-umlauten").token
    assert Security.generate().token


def test_a_bad_token_in_the_environment_is_refused_by_from_config(monkeypatch):
    monkeypatch.setenv("STORIED_AUTH_TOKEN", TOKEN + "\n")
    with pytest.raises(ValueError, match="control characters"):
        Security.from_config()


# ---------------------------------------------------------------------------------- TLS/plain


def _listener_and_connect(server: Security, client: Security, scheme: str) -> float:
    """Seconds until connecting with ``client`` to a listener with ``server`` fails;
    the error is raised."""

    async def attempt() -> float:
        listener = Listener("tcp://127.0.0.1:0", _echo, server)
        await listener.start()
        started = time.monotonic()
        try:
            await connect(f"{scheme}://127.0.0.1:{listener.port}", client, timeout=10)
        finally:
            elapsed = time.monotonic() - started
            await listener.close()
        return elapsed

    return asyncio.run(attempt())


def test_a_plain_client_meeting_a_tls_listener_is_told_within_a_second(make_ca):
    tls = make_ca("mismatch-ca").security("scheduler")
    started = time.monotonic()
    with pytest.raises(CommClosedError, match=r"if it uses TLS, connect to tls://"):
        _listener_and_connect(tls, Security(), "tcp")
    assert time.monotonic() - started < 1.0


def test_a_tls_client_meeting_a_plain_listener_is_told_within_a_second(make_ca):
    tls = make_ca("mismatch-ca2").security("client")
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="does not speak TLS"):
        _listener_and_connect(Security(), tls, "tls")
    assert time.monotonic() - started < 1.0


def test_a_client_is_told_of_the_mismatch_within_a_second(make_ca):
    """The same through ``Client``, against a scheduler in another thread's loop."""
    ca = make_ca("mismatch-ca3")
    with LocalCluster(
        n_workers=0,
        processes=False,
        security=ca.security("scheduler", token=TOKEN),
        dashboard_address=None,
    ) as cluster:
        plain_address = cluster.scheduler_address.replace("tls://", "tcp://")
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="tls://"):
            Client(plain_address, security=Security(token=TOKEN), timeout=10)
        assert time.monotonic() - started < 1.0
