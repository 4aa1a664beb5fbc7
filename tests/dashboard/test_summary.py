"""A run's summary, stored by the ledger's writer when the run ends, answers every question
the pages ask exactly as counting the run's records does (``TaskTable``)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from storied.dashboard.history import LedgerRun
from storied.dashboard.stored import StoredTasks
from storied.dashboard.tally import TaskTable
from storied.record.ledger import SCHEMA_VERSION, Ledger
from storied.record.transitions import TransitionLog

WORKERS = ["tcp://w1:1", "tcp://w2:2", "tcp://w3:3"]


def key_of(task: int) -> str:
    return f"{['inc', 'add', 'sum-partial', 'load'][task % 4]}-{task:08x}0a"


def write_run(path: Path, tasks: int = 300, ledger: Ledger | None = None) -> int:
    """A run through the writer: tasks that finish, fail, are retried, are let go, never run,
    a worker's shipped transitions, and executions of a key the scheduler never held. The run
    ends, but on a ``ledger`` given: that one is flushed and left open."""
    end = ledger is None
    ledger = ledger or Ledger(path, batch_size=37, flush_interval=0.01)
    run_id = ledger.start_run({"where": "scheduler"})
    log = TransitionLog(10_000, seq=iter(range(ledger.first_seq(run_id), 2**62)))
    ledger.follow(run_id, log)
    for task in range(tasks):
        key, worker = key_of(task), WORKERS[task % 3]
        log.append(key, "released", "waiting", {}, f"graph-{task // 50}", timestamp=task)
        if task % 7 == 6:
            continue  # never ran: still waiting at the end
        log.append(key, "waiting", "processing", {}, f"graph-{task // 50}", timestamp=task)
        attempts = ["erred", "memory"] if task % 11 == 0 else ["memory"]
        if task % 13 == 0:
            attempts = ["erred", "erred"]
        for n, outcome in enumerate(attempts):
            ledger.put_execution(run_id, key, worker, 0, task + n, task + n + 0.25 * n, outcome)
        final = attempts[-1]
        log.append(key, "processing", final, {}, f"done-{task}", worker, task + 1)
        if task % 5 == 0:
            log.append(key, final, "released", {}, "let-go", timestamp=task + 2)
            log.append(key, "released", "forgotten", {}, "let-go", timestamp=task + 2)
        if task % 40 == 0:
            ledger.flush()
    ledger.put_execution(run_id, "gone-1", WORKERS[0], 1, 0.0, 1.0, "memory")
    ledger.put_execution(run_id, "gone-1", WORKERS[1], 1, 1.0, 1.5, "cancelled")
    ledger.put_transitions(run_id, [(10**9, "inc-x", "a", "b", "s", 0.0, WORKERS[0], None)], [{}])
    if end:
        ledger.close()
    else:
        ledger.flush()
    return run_id


def counted(path: Path, run_id: int) -> TaskTable:
    ledger = Ledger(path)
    return TaskTable(ledger.scheduler_outcomes(run_id), ledger.execution_outcomes(run_id))


def stored(path: Path, run_id: int) -> StoredTasks:
    ledger = Ledger(path)
    rows = ledger.task_counts(run_id)
    assert rows is not None
    return StoredTasks(ledger, run_id, rows)


@pytest.mark.parametrize("run", [0, 1])
def test_the_summary_answers_as_counting_does(tmp_path: Path, run: int) -> None:
    path = tmp_path / "run.db"
    run_id = [write_run(path, tasks=300 - 50 * n) for n in range(2)][run]
    table, summary = counted(path, run_id), stored(path, run_id)
    assert len(summary) == len(table) == 301 - 50 * run
    assert summary.counts.progress() == table.counts.progress()
    assert summary.counts.by_worker == table.counts.by_worker
    assert summary.counts.outcomes == table.counts.outcomes
    assert {"waiting", "memory", "erred"} <= {
        state for row in table.counts.progress() for state in row["states"]
    }
    for prefix in (None, "inc", "sum-partial", "nothing"):
        for state in (None, "memory", "erred", "waiting", "released"):
            for offset, limit in ((0, 10), (7, 25), (60, 100), (290, 50), (400, 5)):
                assert summary.page(offset, limit, prefix, state) == table.page(
                    offset, limit, prefix, state
                ), (prefix, state, offset)
    for text in ("", "inc-", "inc-0000000", "add-0000001", key_of(5), "gone", "zzz", "sum"):
        for limit in (1, 3, 50, 500):
            assert summary.starting_with(text, limit) == table.starting_with(text, limit)


def test_a_ledger_run_reads_its_summary_and_counts_one_without(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    ended = write_run(path, tasks=40)
    ledger = Ledger(path)
    info = {run["run_id"]: run for run in ledger.runs()}
    assert isinstance(LedgerRun(ledger, ended, info[ended]).task_table(), StoredTasks)
    with sqlite3.connect(path) as conn:  # as if the scheduler had crashed before the end
        conn.execute("DELETE FROM run_counts")
    assert ledger.task_counts(ended) is None
    assert isinstance(LedgerRun(ledger, ended, info[ended]).task_table(), TaskTable)


def test_a_run_still_running_has_no_summary(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    ledger = Ledger(path)
    try:
        run_id = write_run(path, tasks=20, ledger=ledger)
        assert Ledger(path).task_counts(run_id) is None
    finally:
        ledger.close()
    assert Ledger(path).task_counts(run_id) is not None


def test_a_read_only_ledger_reads_its_summaries(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = tmp_path / "run.db"
    run_id = write_run(path, tasks=30)
    expected = counted(path, run_id).page(0, 100)
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        assert stored(path, run_id).page(0, 100) == expected
    finally:
        os.chmod(tmp_path, 0o755)


def test_version_4_ledgers_are_read_and_upgraded_when_written(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_run = write_run(path, tasks=20)
    with sqlite3.connect(path) as conn:  # what a ledger of version 4 was
        conn.execute("DROP TABLE run_tasks")
        conn.execute("DROP TABLE run_counts")
        conn.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")
    ledger = Ledger(path)
    assert ledger.task_counts(old_run) is None
    assert len(ledger.tasks(run_id=old_run)) == 22  # the worker-shipped key too
    new_run = write_run(path, tasks=20)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    assert ledger.task_counts(old_run) is None
    assert len(stored(path, new_run)) == len(counted(path, new_run)) == 21


def test_a_run_too_large_to_sum_up_ends_without_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("storied.record.ledger.SUMMARY_MAX_TASKS", 10)
    path = tmp_path / "run.db"
    with caplog.at_level("INFO", logger="storied.record"):
        run_id = write_run(path, tasks=40)
    assert "ends without a summary" in caplog.text
    ledger = Ledger(path)
    assert ledger.task_counts(run_id) is None
    info = {run["run_id"]: run for run in ledger.runs()}[run_id]
    assert len(LedgerRun(ledger, run_id, info).task_table()) == 41  # counted instead


def test_a_run_that_outlived_retention_is_summed_up_from_what_is_still_on_file(
    tmp_path: Path,
) -> None:
    """The summary is read back from the run's blocks when it ends: tasks whose records
    retention deleted while the run went on are not in it, as their executions never were."""
    path = tmp_path / "run.db"
    ledger = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    run_id = ledger.start_run({"where": "scheduler"})
    log = TransitionLog(1_000, seq=iter(range(ledger.first_seq(run_id), 2**62)))
    ledger.follow(run_id, log)
    now = time.time()
    for task, when in (("inc-old", now - 7_200), ("inc-new", now)):
        log.append(task, "released", "waiting", {}, f"graph-{task}", timestamp=when)
        log.append(task, "waiting", "memory", {}, f"done-{task}", WORKERS[0], when)
        ledger.put_execution(run_id, task, WORKERS[0], 0, when, when + 0.5, "memory")
    ledger.flush()
    deadline = time.monotonic() + 10
    while ledger.story("inc-old"):
        assert time.monotonic() < deadline, "retention did not prune the old task"
        time.sleep(0.02)
    ledger.close()
    reader = Ledger(path)
    assert ("tasks", "", "", 1) in (reader.task_counts(run_id) or [])
    assert [task["key"] for task in reader.task_page(run_id, 0, 10)[1]] == ["inc-new"]
