"""Failures joined to stories, and runs told apart, on records written without a cluster."""

from __future__ import annotations

import json
import logging

import click
import pytest
from click.testing import CliRunner

from storied.cli import history
from storied.record import Ledger, Record
from storied.record.failures import explain_story, failure_text
from storied.record.ledger import FAILURE_FIELDS
from storied.record.shipments import pack_shipment


def a_failure(key: str, stimulus_id: str, **fields) -> dict:
    return {
        "key": key,
        "stimulus_id": stimulus_id,
        "timestamp": 1_700_000_001.0,
        "outcome": "erred",
        "attempt": 1,
        "worker": "tcp://w:1",
        "start": 1_700_000_000.5,
        "stop": 1_700_000_000.75,
        "exception_type": "ValueError",
        "message": "bad",
        "traceback": "Traceback (most recent call last):\n  ...\nValueError: bad\n",
        "blame": None,
        **fields,
    }


def record_run(path, n: int) -> None:
    """Run ``n``: key ``k`` retried once then erred, and its dependent ``d`` erred with it."""
    record = Record(ledger=Ledger(path))
    base = 1_700_000_000.0 + 100 * n
    record.transition("k", "released", "waiting", {"k": "processing"}, f"graph-{n}", timestamp=base)
    record.transition(
        "k", "processing", "released", {"k": "waiting"}, f"err1-{n}", timestamp=base + 1
    )
    record.transition(
        "k", "released", "waiting", {"k": "processing"}, f"err1-{n}", timestamp=base + 1
    )
    record.transition("k", "processing", "erred", {"d": "erred"}, f"err2-{n}", timestamp=base + 2)
    record.transition("d", "waiting", "erred", {}, f"err2-{n}", timestamp=base + 2)
    record.worker_transitions(
        "tcp://w:1",
        pack_shipment([["k"], ["executing"], ["error"], [{}], [f"err2-{n}"], [base + 2]]),
    )
    record.failure(a_failure("k", f"err1-{n}", outcome="retried", timestamp=base + 1))
    record.failure(
        a_failure("k", f"err2-{n}", attempt=2, start=base + 1.5, stop=base + 2, timestamp=base + 2)
    )
    record.failure(
        a_failure("d", f"err2-{n}", attempt=None, worker=None, start=None, stop=None, blame="k")
    )
    record.execution("k", "tcp://w:1", 7, base + 1.5, base + 2, "erred")
    record.event(["erred"], {"key": "k", "run": n}, "scheduler", timestamp=base + 2)
    logger = logging.getLogger("storied.test.failures")
    logger.addHandler(record.log_handler())
    logger.warning("run %d went wrong", n)
    logger.removeHandler(record.log_handler())
    record.close()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("failures") / "ledger.db"
    record_run(path, 1)
    record_run(path, 2)
    return str(path)


def invoke(*args: str) -> click.testing.Result:
    group = click.Group("storied", commands={c.name: c for c in history.history_commands})
    return CliRunner().invoke(group, list(args), catch_exceptions=False)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_a_failure_explains_only_the_first_scheduler_transition_it_caused():
    entries = [
        {"run_id": 1, "key": "k", "stimulus_id": "s", "where": "tcp://w:1"},
        {"run_id": 1, "key": "k", "stimulus_id": "s", "where": "scheduler"},
        {"run_id": 1, "key": "k", "stimulus_id": "s", "where": "scheduler"},
        {"run_id": 2, "key": "k", "stimulus_id": "s", "where": "scheduler"},
    ]
    failure = {"run_id": 1, **a_failure("k", "s")}
    explain_story(entries, [failure])
    assert [entry["failure"] for entry in entries] == [None, failure, None, None]


def test_failure_text_names_the_attempt_or_the_blamed_task():
    text = failure_text(a_failure("k", "s"))
    assert text.startswith("attempt 1 on tcp://w:1 after 0.250 s erred: ValueError: bad\n")
    assert text.endswith("ValueError: bad")
    blamed = failure_text(a_failure("d", "s", blame="k", attempt=None, start=None, stop=None))
    assert blamed == "erred because k did: ValueError: bad"


def test_ledger_keeps_failures_by_run_and_joins_them_to_executions(two_runs):
    ledger = Ledger(two_runs)
    assert [f["run_id"] for f in ledger.failures(["k"])] == [1, 1, 2, 2]
    assert set(ledger.failures(["d"])[0]) == {"run_id", *FAILURE_FIELDS}
    assert ledger.failure("k")["run_id"] == 2 and ledger.failure("k", run=1)["attempt"] == 2
    assert ledger.failure("d", run=1)["blame"] == "k"
    (execution,) = ledger.executions(run_id=1)
    assert (execution["attempt"], execution["exception_type"]) == (2, "ValueError")
    first_seqs = [run["first_seq"] for run in ledger.runs()]
    assert ledger.run_of([first_seqs[1] - 1, first_seqs[1], 0]) == [1, 2, None]


def test_story_shows_each_runs_failures_under_the_transitions_they_caused(two_runs):
    rows = json_lines(invoke("story", "k", "--ledger", two_runs, "--json").output)
    assert [row["run_id"] for row in rows] == [1] * 5 + [2] * 5
    explained = [
        (r["run_id"], r["start"], r["finish"], r["failure"]["attempt"])
        for r in rows
        if r["failure"]
    ]
    assert explained == [
        (1, "processing", "released", 1),
        (1, "processing", "erred", 2),
        (2, "processing", "released", 1),
        (2, "processing", "erred", 2),
    ]
    only_two = invoke("story", "d", "--ledger", two_runs, "--run", "2").output.splitlines()
    assert [line.split()[0] for line in only_two if not line.startswith(" ")] == ["RUN", "2", "2"]
    assert "    erred because k did: ValueError: bad" in only_two
    assert "    attempt 2 on tcp://w:1 after 0.500 s erred: ValueError: bad" in only_two


def test_events_logs_tasks_and_timeline_take_a_run(two_runs, tmp_path):
    events = json_lines(invoke("events", "erred", "--ledger", two_runs, "--json").output)
    assert [(e["run_id"], e["msg"]["run"]) for e in events] == [(1, 1), (2, 2)]
    second = json_lines(invoke("events", "--ledger", two_runs, "--run", "2", "--json").output)
    assert [e["run_id"] for e in second] == [2]
    logs = invoke("logs", "--ledger", two_runs, "--run", "1").output.splitlines()
    assert len(logs) == 2 and logs[1].startswith("1 ") and "run 1 went wrong" in logs[1]
    tasks = json_lines(invoke("tasks", "--ledger", two_runs, "--failed", "--json").output)
    assert [(t["run_id"], t["key"], t["state"], t["failures"]) for t in tasks] == [
        (1, "k", "erred", 2),
        (1, "d", "erred", 1),
        (2, "k", "erred", 2),
        (2, "d", "erred", 1),
    ]
    assert tasks[1]["blame"] == "k" and tasks[0]["workers"] == ["tcp://w:1"]
    table = invoke("tasks", "--ledger", two_runs, "--run", "2", "--prefix", "d").output
    assert "ValueError: bad (because k erred)" in table and len(table.splitlines()) == 2
    trace = tmp_path / "trace.json"
    every = invoke("timeline", "--ledger", two_runs, "-o", str(trace), "--run", "all").output
    assert "wrote 2 task executions of every run" in every
    bad = invoke("events", "--ledger", two_runs, "--run", "latest")
    assert bad.exit_code == 2 and "neither a run id nor 'all'" in bad.output


def test_runs_count_failures_retries_and_erred_tasks(two_runs):
    runs = json_lines(invoke("runs", "--ledger", two_runs, "--json").output)
    assert [(r["run_id"], r["failures"], r["erred"], r["retried"], r["tasks"]) for r in runs] == [
        (1, 2, 2, 1, 1),
        (2, 2, 2, 1, 1),
    ]


def test_retention_prunes_old_failures(tmp_path):
    path = tmp_path / "pruned.db"
    record_run(path, 1)
    ledger = Ledger(path, retain=60, prune_every=0.01, flush_interval=0.01)
    record = Record(ledger=ledger)
    record.failure(a_failure("new", "s", timestamp=9e9))
    record.close()
    assert [f["key"] for f in Ledger(path).failures()] == ["new"]
