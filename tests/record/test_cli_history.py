from __future__ import annotations

import dataclasses
import json
import logging
import time

import click
import pytest
from click.testing import CliRunner

from storied.cli import history
from storied.record import Ledger, Record
from storied.record.shipments import pack_shipment


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "ledger.db"
    record = Record(ledger=Ledger(path), run_info={"address": "tcp://s:1"})
    record.transition(
        "inc-1",
        "released",
        "waiting",
        {"inc-1": "processing"},
        "graph-1",
        timestamp=1_700_000_000.0,
    )
    record.transition("inc-1", "waiting", "memory", {}, "done-1", timestamp=1_700_000_001.0)
    # shipped after the scheduler logged the above (a higher seq), though it happened between
    record.worker_transitions(
        "tcp://w:1",
        pack_shipment([["inc-1"], ["executing"], ["memory"], [{}], ["done-1"], [1_700_000_000.7]]),
    )
    record.transition("other", "released", "waiting", {}, "graph-2", timestamp=1_700_000_002.0)
    record.event(["runtimes"], {"start": 1.0}, "tcp://w:1", timestamp=1_700_000_000.0)
    record.event(["workers"], {"action": "add"}, "scheduler", timestamp=1_700_000_005.0)
    record.event(["runtimes"], {"start": 2.0}, "tcp://w:1", timestamp=1_700_000_010.0)
    record.execution("inc-1", "tcp://w:1", 99, 1_700_000_000.2, 1_700_000_000.7, "memory")
    logger = logging.getLogger("storied.test.cli")
    logger.addHandler(record.log_handler())
    logger.warning("worker tcp://w:1 is slow")
    logger.error("worker tcp://w:2 died")
    logger.removeHandler(record.log_handler())
    record.close()
    return str(path)


def invoke(*args: str):
    group = click.Group("storied", commands={c.name: c for c in history.history_commands})
    result = CliRunner().invoke(group, list(args), catch_exceptions=False)
    return result


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_story_table_and_json(ledger_file):
    table = invoke("story", "inc-1", "--ledger", ledger_file)
    assert table.exit_code == 0
    header, first, on_worker, last = table.output.splitlines()  # in time order, as client.story
    assert "tcp://w:1" in on_worker and "executing -> memory" in on_worker
    assert "waiting -> memory" in last
    assert header.split() == [
        "RUN",
        *("TIME", "WHERE", "KEY", "TRANSITION", "STIMULUS", "RECOMMENDATIONS"),
    ]
    assert first.startswith("1 ")
    assert "released -> waiting" in first and "inc-1: processing" in first
    assert first.index("graph-1") == header.index("STIMULUS")  # columns are aligned
    rows = json_lines(invoke("story", "inc-1", "--ledger", ledger_file, "--json").output)
    assert [(r["start"], r["finish"]) for r in rows] == [
        ("released", "waiting"),
        ("executing", "memory"),
        ("waiting", "memory"),
    ]


def test_events_filters(ledger_file):
    rows = json_lines(invoke("events", "runtimes", "--ledger", ledger_file, "--json").output)
    assert [r["msg"] for r in rows] == [{"start": 1.0}, {"start": 2.0}]
    since = invoke("events", "--ledger", ledger_file, "--since", "1700000005", "--json")
    assert [r["topic"] for r in json_lines(since.output)] == ["workers", "runtimes"]
    limited = invoke("events", "--ledger", ledger_file, "--limit", "1", "--json")
    assert json_lines(limited.output)[0]["msg"] == {"start": 2.0}
    table = invoke("events", "workers", "--ledger", ledger_file, "--until", "2100-01-01T00:00")
    assert table.output.splitlines()[1].split()[3:] == [
        "workers",
        "scheduler",
        '{"action":',
        '"add"}',
    ]
    bad = CliRunner().invoke(history.events, ["--ledger", ledger_file, "--since", "yesterday"])
    assert bad.exit_code == 2 and "is not a time: use seconds since the epoch" in bad.output


def _follow(path, monkeypatch, before, during, *options: str) -> tuple[list, list[float]]:
    """``events t --follow`` on a ledger holding ``before``; ``during`` (msg, timestamp) pairs
    arrive at the first poll, the second poll stops it. Returns the msgs printed and the polls."""
    record = Record(ledger=Ledger(path))
    for msg, timestamp in before:
        record.event(["t"], msg, "scheduler", timestamp=timestamp)
    record.close()
    polls = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            later = Record(ledger=Ledger(path))
            for msg, timestamp in during:
                later.event(["t"], msg, "scheduler", timestamp=timestamp)
            later.close()
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(history.time, "sleep", fake_sleep)
    result = invoke("events", "t", "--ledger", str(path), "--json", "--follow", *options)
    assert result.exit_code == 0
    return [row["msg"] for row in json_lines(result.output)], polls


def test_events_follow_prints_new_rows_until_interrupted(tmp_path, monkeypatch):
    now = time.time()
    printed, polls = _follow(
        tmp_path / "follow.db", monkeypatch, [("before", now)], [("during", now + 1)]
    )
    assert printed == ["before", "during"]
    assert polls == [history.FOLLOW_POLL_INTERVAL] * 2


def test_events_follow_since_does_not_replay_what_came_before(tmp_path, monkeypatch):
    """Issue 16: with nothing in the window yet, following used to replay every event."""
    printed, _ = _follow(
        tmp_path / "follow-since.db",
        monkeypatch,
        [("long before", 1_000.0)],
        [("also before", 2_000.0), ("in the window", 3_000.0)],
        "--since",
        "2500",
    )
    assert printed == ["in the window"]


def test_logs_level_worker_and_limit(ledger_file):
    rows = json_lines(invoke("logs", "--ledger", ledger_file, "--json").output)
    assert [r["level"] for r in rows] == ["WARNING", "ERROR"]
    errors = invoke("logs", "--ledger", ledger_file, "--level", "error")
    assert "tcp://w:2 died" in errors.output and "slow" not in errors.output
    assert invoke("logs", "--ledger", ledger_file, "--worker", "tcp://w:9").output.count("\n") == 1
    limited = json_lines(invoke("logs", "--ledger", ledger_file, "--limit", "1", "--json").output)
    assert [r["level"] for r in limited] == ["ERROR"]
    bad = CliRunner().invoke(history.logs, ["--ledger", ledger_file, "--level", "LOUD"])
    assert bad.exit_code == 2 and "unknown log level" in bad.output


def test_runs(ledger_file):
    (run,) = json_lines(invoke("runs", "--ledger", ledger_file, "--json").output)
    assert run["run_id"] == 1 and run["info"]["address"] == "tcp://s:1" and run["ended"]
    header, row = invoke("runs", "--ledger", ledger_file).output.splitlines()
    assert header.split() == [
        *("RUN", "STARTED", "ENDED", "TASKS", "FAILURES", "ERRED", "RETRIED", "WORKERS"),
        *("DURATION", "INFO"),
    ]
    assert row.split()[:1] + row.split()[5:10] == ["1", "1", "0", "0", "0", "1"]


def test_timeline_writes_a_trace(ledger_file, tmp_path):
    output = tmp_path / "trace.json"
    result = invoke("timeline", "--ledger", ledger_file, "-o", str(output))
    assert "wrote 1 task executions of run 1" in result.output
    (task,) = [e for e in json.loads(output.read_text())["traceEvents"] if e["ph"] == "X"]
    assert task["name"] == "inc-1" and task["args"]["outcome"] == "memory"


def test_missing_ledger_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(history.runs, ["--ledger", str(tmp_path / "nope.db")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_logs_window_logger_and_task_filters(tmp_path):
    from storied.record import LogRecordEntry

    path = tmp_path / "logs.db"
    record = Record(ledger=Ledger(path))
    for timestamp, name, key, message in [
        (1_000.0, "storied.comm", None, "refused a stranger"),
        (2_000.0, "storied.communism", None, "not a child of storied.comm"),
        (3_000.0, "storied.comm.tcp", None, "a child of storied.comm"),
        (4_000.0, "stdout", "inc-1", "inc-1 printed"),
        (5_000.0, "user", "inc-2", "inc-2 logged"),
    ]:
        record.remote_log(LogRecordEntry(timestamp, "INFO", 20, name, message, "tcp://w:1", key))
    record.close()

    def messages(*options: str) -> list[str]:
        result = invoke("logs", "--ledger", str(path), "--json", *options)
        assert result.exit_code == 0, result.output
        return [row["message"] for row in json_lines(result.output)]

    assert messages("--since", "2000", "--until", "4000") == [
        "not a child of storied.comm",
        "a child of storied.comm",
    ]
    assert messages("--logger", "storied.comm") == [
        "refused a stranger",
        "a child of storied.comm",
    ]
    assert messages("--key", "inc-1", "--key", "inc-2") == ["inc-1 printed", "inc-2 logged"]
    printed = LogRecordEntry(4_000.0, "INFO", 20, "stdout", "inc-1 printed", "tcp://w:1", "inc-1")
    [row] = json_lines(invoke("logs", "--ledger", str(path), "--json", "--key", "inc-1").output)
    assert row == {"run_id": 1, **printed.as_dict()}, "the live API's shape, with the run"
    assert list(printed.as_dict()) == [f.name for f in dataclasses.fields(LogRecordEntry)]
    assert messages("--since", "1970-01-01T00:50:00+00:00", "--limit", "1") == ["inc-2 logged"]
    table = invoke("logs", "--ledger", str(path), "--key", "inc-1").output.splitlines()
    assert table[0].split() == ["RUN", "TIME", "LEVEL", "WHERE", "LOGGER", "KEY", "MESSAGE"]
    assert table[1].split()[-3:] == ["inc-1", "inc-1", "printed"]


def test_logs_are_read_in_pages(tmp_path):
    from storied.record import LogRecordEntry

    path = tmp_path / "pages.db"
    for run in range(2):  # two runs on one file
        record = Record(ledger=Ledger(path))
        for i in range(5):
            entry = LogRecordEntry(1_000.0 * run + i, "INFO", 20, "user", f"run {run} #{i}", "s")
            record.remote_log(entry)
        record.close()
    ledger = Ledger(path)
    pages = list(ledger.log_pages(page_size=2, run_id=2))
    assert [[e.message for e in page] for page in pages] == [
        ["run 1 #0", "run 1 #1"],
        ["run 1 #2", "run 1 #3"],
        ["run 1 #4"],
    ]
    assert [e for page in ledger.log_pages(page_size=3, since=1_000.0) for e in page] == (
        ledger.logs(since=1_000.0)
    )
    table = invoke("logs", "--ledger", str(path)).output.splitlines()
    assert table[0].startswith("RUN") and len(table) == 11
    assert [line.split()[0] for line in table[1:]] == ["1"] * 5 + ["2"] * 5
    rows = json_lines(invoke("logs", "--ledger", str(path), "--json", "--run", "2").output)
    assert [row["message"] for row in rows] == [f"run 1 #{i}" for i in range(5)]


def test_events_of_all_topics_leave_out_worker_metrics_unless_all(tmp_path):
    """A sample per worker per heartbeat would drown the rest: without a topic the listing
    leaves ``worker-metrics`` out (``--limit`` counting only what is listed), ``--all`` or the
    topic itself brings it back."""
    path = tmp_path / "telemetry.db"
    record = Record(ledger=Ledger(path))
    record.event(["workers"], {"action": "add"}, "scheduler", timestamp=1_000.0)
    for i in range(50):
        record.event(["worker-metrics"], {"i": i}, "scheduler", timestamp=1_001.0 + i)
    record.event(["deploys"], {"version": 7}, "client", timestamp=1_100.0)
    record.close()

    def topics(*options: str) -> list[str]:
        result = invoke("events", "--ledger", str(path), "--json", *options)
        assert result.exit_code == 0, result.output
        return [row["topic"] for row in json_lines(result.output)]

    assert topics() == ["workers", "deploys"]
    assert topics("--limit", "2") == ["workers", "deploys"]
    assert topics("--all") == ["workers", *["worker-metrics"] * 50, "deploys"]
    assert topics("--all", "--limit", "2") == ["worker-metrics", "deploys"]
    assert topics("worker-metrics") == ["worker-metrics"] * 50
    assert "--all" in invoke("events", "--help").output


def test_live_events_leave_out_worker_metrics_but_the_python_api_keeps_them():
    from storied import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.log_event("deploys", {"version": 7})
        deadline = time.monotonic() + 30
        while not client.get_events("worker-metrics"):  # a sample comes with each heartbeat
            assert time.monotonic() < deadline, "no worker-metrics sample within 30 s"
            time.sleep(0.05)
        assert "worker-metrics" in client.get_events()  # as Dask: every topic
        address = cluster.scheduler_address
        token = cluster.security.token if cluster.security else None
        options = ["--scheduler", address, "--json", *(["--auth-token", token] if token else [])]
        listed = {row["topic"] for row in json_lines(invoke("events", *options).output)}
        assert "deploys" in listed and "worker-metrics" not in listed
        listed = {row["topic"] for row in json_lines(invoke("events", "--all", *options).output)}
        assert {"deploys", "worker-metrics"} <= listed
