"""Standard logging over a real cluster (issue 3, point 1): logger names, admin records kept in
memory and read back newest first, and config that reaches worker processes."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from engine.helpers import poll

from storied import Client, config

from .helpers import fail, log_on_scheduler, log_on_worker, small_cluster, unique

FORMATTED = re.compile(r"^\S+ \S+ - (?P<logger>\S+) - (?P<level>[A-Z]+) - ")


def logger_names(entries: list[tuple[str, str]]) -> set[str]:
    return {FORMATTED.match(message)["logger"] for _, message in entries}  # type: ignore[index]


def messages(entries: list[tuple[str, str]]) -> str:
    return "\n".join(message for _, message in entries)


def test_records_come_from_loggers_named_after_their_process(client):
    """Each process keeps every ``storied.*`` logger (comm, record, ...), but the scheduler never
    takes a worker's records, nor a worker the scheduler's."""
    scheduler_loggers = logger_names(client.get_scheduler_logs())
    assert "storied.scheduler" in scheduler_loggers
    assert all(re.fullmatch(r"storied\..+", name) for name in scheduler_loggers)
    assert not any(re.fullmatch(r"storied\.worker(\..+)?", name) for name in scheduler_loggers)
    for entries in client.get_worker_logs().values():
        worker_loggers = logger_names(entries)
        assert "storied.worker" in worker_loggers
        assert all(re.fullmatch(r"storied\..+", name) for name in worker_loggers)
        assert not any(re.fullmatch(r"storied\.scheduler(\..+)?", n) for n in worker_loggers)


def test_levels_and_messages_pair_up(client):
    for level, message in client.get_scheduler_logs(n=20):
        assert FORMATTED.match(message)["level"] == level  # type: ignore[index]


def test_worker_left_and_why_is_in_the_scheduler_logs():
    with small_cluster(n_workers=2) as cluster, Client(cluster) as client:
        leaving = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "1")
        cluster.scale(1)
        logs = poll(
            lambda: (
                messages(client.get_scheduler_logs())
                if f"Remove worker {leaving}" in messages(client.get_scheduler_logs())
                else None
            ),
            what="worker removal logged",
        )
    assert f"Register worker {leaving} (name: 1" in logs
    assert re.search(
        rf"Remove worker {re.escape(leaving)} \(name: 1\): closed \(worker-close\); lost 0 ",
        logs,
    )


def test_client_connected_and_left_are_in_the_scheduler_logs(cluster, client):
    with Client(cluster) as visitor:
        visitor_id = visitor.id
    logs = poll(
        lambda: (
            messages(client.get_scheduler_logs())
            if f"Remove client {visitor_id}" in messages(client.get_scheduler_logs())
            else None
        ),
        what="client removal logged",
    )
    assert f"Receive client connection: {visitor_id}" in logs


def test_task_erred_is_in_the_scheduler_logs(client):
    future = client.submit(fail, unique("input"))
    assert isinstance(future.exception(timeout=10), ZeroDivisionError)
    logs = client.get_scheduler_logs(n=20)
    [(level, message)] = [(lv, m) for lv, m in logs if f"Task {future.key} erred" in m]
    assert level == "WARNING"
    assert "ZeroDivisionError: cannot handle" in message


def test_scheduler_logs_honour_n_and_are_newest_first(client):
    marks = [unique(f"mark{i}") for i in range(3)]
    client.run_on_scheduler(log_on_scheduler, marks)
    logs = client.get_scheduler_logs(n=3)
    assert [message.rsplit(" - ", 1)[1] for _, message in logs] == marks[::-1]
    assert len(client.get_scheduler_logs(n=1)) == 1


def test_worker_logs_are_keyed_by_address_and_honour_n_and_workers(client):
    workers = sorted(client.scheduler_info()["workers"])
    marks = [unique(f"mark{i}") for i in range(3)]
    target = workers[0]
    assert client.run(log_on_worker, marks, workers=[target]) == {target: target}

    logs = client.get_worker_logs(n=3, workers=[target])
    assert list(logs) == [target]
    assert [(level, m.rsplit(" - ", 1)[1]) for level, m in logs[target]] == [
        ("INFO", mark) for mark in reversed(marks)
    ]
    assert list(client.get_worker_logs(n=1, workers=target)) == [target]
    everyone = client.get_worker_logs(n=2)
    assert sorted(everyone) == workers
    assert [m.rsplit(" - ", 1)[1] for _, m in everyone[target]] == [marks[2], marks[1]]
    assert 1 <= len(everyone[workers[1]]) <= 2
    assert not any(mark in messages(everyone[workers[1]]) for mark in marks)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Undo what a dictConfig applied in this process does to storied's loggers."""
    names = ["", "storied", "storied.scheduler", "storied.worker", "storied.client"]
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (level, handlers, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled


def test_worker_processes_honour_a_yaml_logging_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_logging: None
):
    log_file = tmp_path / "worker.log"
    config_file = tmp_path / "storied.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "logging": {
                    "version": 1,
                    "formatters": {"tagged": {"format": "FROM-YAML %(name)s %(message)s"}},
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "filename": str(log_file),
                            "formatter": "tagged",
                        }
                    },
                    "loggers": {"storied.worker": {"level": "INFO", "handlers": ["file"]}},
                }
            }
        )
    )
    monkeypatch.setenv("STORIED_CONFIG", str(config_file))
    config.refresh()
    try:
        with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
            [address] = client.scheduler_info()["workers"]
            mark = unique("mark")
            client.run(log_on_worker, [mark])
            poll(lambda: log_file.exists() and mark in log_file.read_text(), what="mark in file")
    finally:
        monkeypatch.delenv("STORIED_CONFIG")
        config.refresh()
    written = log_file.read_text()
    assert re.search(rf"^FROM-YAML storied\.worker Worker 0 \(\d+\) at {address}", written, re.M)
    assert f"FROM-YAML storied.worker {mark}" in written


def test_a_users_basic_config_is_respected(tmp_path: Path):
    """In a fresh interpreter: the user's handler prints each storied record, once, in the
    user's format; storied adds no console handler of its own."""
    script = textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="USER %(name)s | %(message)s")
        from storied import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as c:
            assert c.submit(abs, -3).result() == 3
            storied_handlers = [
                h for h in logging.getLogger("storied").handlers if type(h).__module__ ==
                "storied.config"
            ]
            print("HANDLERS", storied_handlers)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=config.environ_for_subprocess(config.load(env={})),
    )
    assert done.returncode == 0, done.stderr
    assert "HANDLERS []" in done.stdout
    scheduler_lines = [line for line in done.stderr.splitlines() if "Scheduler at tcp://" in line]
    assert len(scheduler_lines) == 1
    assert scheduler_lines[0].startswith("USER storied.scheduler | Scheduler at tcp://")
    assert " - storied.scheduler - " not in done.stderr
