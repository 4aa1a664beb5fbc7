"""Task logs (issue 16, point 4): with ``worker.capture-task-logs``, what a task logs (any
logger) and prints is kept with its key, per executing thread, in the worker's logs and the
ledger, and ``storied story KEY`` shows it. Off by default."""

from __future__ import annotations

import json
import logging
import sys
import threading

import pytest
from click.testing import CliRunner

from storied import Client, LocalCluster, config
from storied.cli.main import cli
from storied.record import LogCapture
from storied.record.ledger import Ledger
from storied.worker import tasklogs

from .helpers import chatty_task, inc, stdout_is_wrapped

EXPECTED = [
    ("stdout", "{} printed before"),
    ("user.chatty", "{} logged before"),
    ("stdout", "{} printed after"),
    ("stderr", "{} complained"),
    ("user.chatty", "{} logged after"),
]


def _captured(entries, key):
    return [(e.logger, e.message) for e in entries if e.key == key]


def _expected(name):
    return [(logger, text.format(name)) for logger, text in EXPECTED]


def test_each_thread_tags_its_own_output_with_its_own_task():
    capture = LogCapture(100, "tcp://w:1")
    barrier = threading.Barrier(2)

    def run(key: str) -> None:
        with tasklogs.task_logs(capture, key):
            print(f"{key} printed before")
            logging.getLogger("user.chatty").warning("%s logged before", key)
            barrier.wait(timeout=10)
            print(f"{key} printed", end="")
            print(" after")
            print(f"{key} complained", file=sys.stderr)
            logging.getLogger("user.chatty").error("%s logged after", key)
            logging.getLogger("storied.worker").warning("storied's own: not a task record")

    tasklogs.install()
    try:
        threads = [threading.Thread(target=run, args=(key,)) for key in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        print("not in a task")
        logging.getLogger("user.chatty").warning("not in a task either")
    finally:
        tasklogs.uninstall()
    assert not isinstance(sys.stdout, tasklogs._TeeStream)
    entries = capture.entries()
    assert _captured(entries, "a") == _expected("a")
    assert _captured(entries, "b") == _expected("b")
    assert len(entries) == 2 * len(EXPECTED)
    [(_, formatted)] = [pair for pair in capture.get() if "b complained" in pair[1]]
    assert " - stderr - INFO - task b - b complained" in formatted


def test_task_logs_reach_worker_logs_the_ledger_and_the_story(tmp_path):
    ledger_path = tmp_path / "tasklogs.sqlite"
    with (
        config.set({"worker.capture-task-logs": True}),
        LocalCluster(n_workers=1, threads_per_worker=2, ledger=ledger_path) as cluster,
        Client(cluster) as client,
    ):
        first, second = client.submit(chatty_task, "first"), client.submit(chatty_task, "second")
        assert client.gather([first, second]) == ["first", "second"]
        assert client.run(stdout_is_wrapped) == dict.fromkeys(
            client.scheduler_info()["workers"], True
        )
        [worker_logs] = client.get_worker_logs().values()
        assert any(f"task {first.key} - first printed after" in m for _, m in worker_logs)
        live = client.get_task_logs(first)
        assert [(e["logger"], e["message"]) for e in live] == _expected("first")
        assert {e["key"] for e in client.get_task_logs(first.key, second.key)} == {
            first.key,
            second.key,
        }
        with pytest.raises(TypeError, match=r"get_task_logs\(\) takes keys"):
            client.get_task_logs(3)
    ledger = Ledger(ledger_path)
    assert _captured(ledger.logs(), first.key) == _expected("first")
    assert _captured(ledger.logs(keys=[second.key]), second.key) == _expected("second")
    assert ledger.logs(keys=[first.key], logger="user") == ledger.logs(
        keys=[first.key], logger="user.chatty"
    )
    # one shape: the CLI's JSON is the live API's records, with the run they belong to
    shown = CliRunner().invoke(
        cli, ["logs", "--key", first.key, "--ledger", str(ledger_path), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    rows = [json.loads(line) for line in shown.output.splitlines()]
    assert [row.pop("run_id") for row in rows] == [1] * len(live)
    assert rows == live
    story = CliRunner().invoke(cli, ["story", first.key, "--ledger", str(ledger_path)])
    assert story.exit_code == 0, story.output
    assert "What the task logged and printed" in story.output
    assert "first printed after" in story.output and "first complained" in story.output
    assert "second" not in story.output


def test_task_logs_are_off_by_default(client):
    assert client.submit(inc, 1).result(timeout=10) == 2
    assert set(client.run(stdout_is_wrapped).values()) == {False}
