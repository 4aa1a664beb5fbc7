"""``storied scheduler`` and ``storied worker`` as separate processes (issue 2, point 10)."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from storied import Client
from storied.cli.main import cli

from .helpers import inc, interruptible, poll

STORIED = str(Path(sys.executable).with_name("storied"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """No token or config from the calling environment: a plain loopback cluster."""
    return {name: value for name, value in os.environ.items() if not name.startswith("STORIED_")}


class Started:
    """A CLI process whose stderr goes to a file the test can read while it runs."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [STORIED, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**clean_environ(), **(env or {})},
                preexec_fn=interruptible,
            )

    def stderr(self) -> str:
        return self.log.read_text()

    def interrupt(self, timeout: float = 15) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Started]]:
    processes: list[Started] = []
    yield processes
    for process in processes:
        process.kill()


def test_help_explains_every_command():
    result = subprocess.run(
        [STORIED, "--help"], capture_output=True, text=True, timeout=30, env=clean_environ()
    )
    assert result.returncode == 0, result.stderr
    assert "scheduler" in result.stdout and "worker" in result.stdout
    for command, options in (
        ("scheduler", ["--host", "--port"]),
        ("worker", ["SCHEDULER_ADDRESS", "--nthreads", "--name"]),
    ):
        sub = CliRunner().invoke(cli, [command, "--help"])
        assert sub.exit_code == 0, sub.output
        for option in options:
            assert option in sub.output, f"storied {command} --help does not mention {option}"


def test_a_cluster_across_processes_shuts_down_cleanly_on_ctrl_c(tmp_path, started):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = Started(
        ["scheduler", "--port", str(port), "--no-ledger"], tmp_path / "scheduler.log"
    )
    started.append(scheduler)
    poll(lambda: "Scheduler at" in scheduler.stderr(), timeout=15)
    worker = Started(
        ["worker", address, "--nthreads", "2", "--name", "cli-worker"], tmp_path / "worker.log"
    )
    started.append(worker)

    with Client(address, timeout=5) as client:
        client.wait_for_workers(1, timeout=15)
        [(worker_address, info)] = client.scheduler_info()["workers"].items()
        assert info["name"] == "cli-worker"
        assert info["nthreads"] == 2
        assert client.gather(client.map(inc, range(5))) == [1, 2, 3, 4, 5]
        # its start-up objects (the record's rings among them) are out of garbage collection
        assert client.run_on_scheduler(gc.get_freeze_count) > 10_000

        assert worker.interrupt() == 0, worker.stderr()
        poll(lambda: not client.scheduler_info()["workers"])

    removal = poll(
        lambda: [
            line
            for line in scheduler.stderr().splitlines()
            if "Remove worker" in line and worker_address in line
        ]
    )
    assert " - INFO - " in removal[0], f"the worker said it was leaving: {removal[0]}"
    assert scheduler.interrupt() == 0, scheduler.stderr()
    assert "Traceback" not in scheduler.stderr() + worker.stderr()


def test_the_scheduler_says_where_history_goes(tmp_path, started):
    ledger = tmp_path / "history.db"
    scheduler = Started(
        ["scheduler", "--port", str(free_port()), "--ledger", str(ledger)], tmp_path / "s.log"
    )
    started.append(scheduler)
    poll(lambda: f"History is kept in the ledger {ledger}" in scheduler.stderr(), timeout=15)
    in_memory = Started(
        ["scheduler", "--port", str(free_port()), "--no-ledger"], tmp_path / "m.log"
    )
    started.append(in_memory)
    poll(lambda: "History is kept in memory only" in in_memory.stderr(), timeout=15)


def test_the_scheduler_command_honours_the_logging_config(tmp_path, started):
    settings = tmp_path / "storied.yaml"
    settings.write_text("logging:\n  storied: warning\n")
    port = free_port()
    scheduler = Started(
        ["scheduler", "--port", str(port), "--no-ledger"],
        tmp_path / "scheduler.log",
        env={"STORIED_CONFIG": str(settings)},
    )
    started.append(scheduler)
    with Client(f"tcp://127.0.0.1:{port}", timeout=15) as client:
        assert client.scheduler_info()["workers"] == {}
    assert scheduler.interrupt() == 0, scheduler.stderr()
    assert " - INFO - " not in scheduler.stderr()
