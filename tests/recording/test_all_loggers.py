"""Every ``storied.*`` logger reaches the record (issue 16, point 4): refused connections
(``storied.comm``) and ledger trouble (``storied.record``), live and in the ledger; each record
goes to one capture when a process hosts a scheduler and workers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config
from storied.protocol import handshake
from storied.record import LogCapture, logcapture
from storied.record.ledger import Ledger
from tests.security.conftest import RawPeer

from .helpers import inc


@pytest.fixture
def alone() -> Iterator[None]:
    """As if no other scheduler or worker lived in this process (a session cluster may)."""
    router, storied_logger = logcapture._ROUTER, logging.getLogger("storied")
    others, router.captures = router.captures, []
    yield
    router.captures = others
    if others and router not in storied_logger.handlers:
        storied_logger.addHandler(router)


@pytest.fixture
def two_captures(alone: None) -> Iterator[tuple[LogCapture, LogCapture]]:
    scheduler, worker = LogCapture(100, "scheduler"), LogCapture(100, "tcp://w:1")
    scheduler.attach("scheduler")
    worker.attach("worker")
    yield scheduler, worker
    scheduler.detach()
    worker.detach()


def _loggers(capture: LogCapture) -> list[str]:
    return [entry.logger for entry in capture.entries()]


def test_each_storied_record_reaches_exactly_one_capture_of_the_process(two_captures):
    scheduler, worker = two_captures
    for name in ("storied.scheduler", "storied.worker.memory", "storied.comm", "storied.record"):
        logging.getLogger(name).warning("hello from %s", name)
    logging.getLogger("elsewhere").warning("not storied's")
    assert _loggers(scheduler) == ["storied.scheduler", "storied.comm", "storied.record"]
    assert _loggers(worker) == ["storied.worker.memory"]


def test_a_worker_alone_in_its_process_captures_every_storied_logger(alone):
    worker = LogCapture(100, "tcp://w:1")
    worker.attach("worker")
    try:
        logging.getLogger("storied.comm").warning("refused someone")
        logging.getLogger("storied.nanny").warning("nanny says")
    finally:
        worker.detach()
    logging.getLogger("storied.comm").warning("after detach: not captured")
    assert _loggers(worker) == ["storied.comm", "storied.nanny"]
    assert logcapture._ROUTER not in logging.getLogger("storied").handlers


def test_a_refused_connection_reaches_the_scheduler_logs_and_the_ledger(tmp_path):
    ledger_path = tmp_path / "refused.sqlite"
    with LocalCluster(n_workers=0, processes=False, ledger=ledger_path) as cluster:
        with RawPeer(cluster.scheduler_address) as peer:
            peer.send(handshake.client_answer(peer.read(), "not-the-token"))
            assert peer.read()["op"] == "refused"
        wanted = f"Refused connection from tcp://127.0.0.1:{peer.local_port}"
        with Client(cluster) as client:
            poll(
                lambda: any(wanted in m for _, m in client.get_scheduler_logs()),
                what="the refusal in get_scheduler_logs",
            )
    [entry] = [e for e in Ledger(ledger_path).logs() if wanted in e.message]
    assert (entry.logger, entry.level, entry.where) == ("storied.comm", "WARNING", "scheduler")


def test_ledger_trouble_reaches_the_record(tmp_path):
    """A ledger whose queue is too small drops records; its warning (``storied.record``) is
    kept with the scheduler's own logs."""
    with (
        config.set({"ledger.queue-size": 1, "ledger.batch-size": 1}),
        LocalCluster(n_workers=1, processes=False, ledger=tmp_path / "small.sqlite") as cluster,
        Client(cluster) as client,
    ):
        assert len(client.gather(client.map(inc, range(300)))) == 300
        lines = poll(
            lambda: [
                m for _, m in client.get_scheduler_logs() if " - storied.record - WARNING" in m
            ],
            what="the ledger's warning about dropped records",
        )
    assert "dropped" in lines[0] and "small.sqlite" in lines[0]


def test_a_plain_client_honours_the_logging_config(cluster, tmp_path):
    config_file = tmp_path / "storied.yaml"
    config_file.write_text("logging:\n  storied.client: debug\n  storied.comm: error\n")
    script = textwrap.dedent(
        f"""
        import logging
        from storied import Client
        from storied.comm import Security
        with Client({cluster.scheduler_address!r}, security=Security.from_config()):
            print(logging.getLogger("storied.client").getEffectiveLevel(),
                  logging.getLogger("storied.comm").getEffectiveLevel())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={
            **_environment(),
            "STORIED_CONFIG": str(config_file),
            "STORIED_AUTH_TOKEN": cluster.security.token or "",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(logging.DEBUG), str(logging.ERROR)]


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STORIED_")}
