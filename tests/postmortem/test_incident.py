"""A staged incident, investigated afterwards from the ledger file alone, through the CLI.

1,000 tasks on three worker processes, some raising, some flaky and retried, one dependent of a
failed task, and a worker SIGKILLed mid-run. The cluster is gone before the first question is
asked; every answer comes from ``storied ... --ledger PATH`` and is checked against what the
test knows it staged.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from engine.helpers import poll

from storied import Client, LocalCluster, config, wait
from storied.cli.main import cli

#: every BAD_EVERY-th input (from BAD_OFFSET) makes ``work`` raise
BAD_EVERY = 97
BAD_OFFSET = 13


def is_bad(i: int) -> bool:
    return i % BAD_EVERY == BAD_OFFSET


def work(i: int, seconds: float) -> int:
    """A task that takes a while, and raises on bad inputs."""
    time.sleep(seconds)
    if is_bad(i):
        raise ValueError(f"bad input {i}")
    return i


def flaky(i: int, marker_dir: str) -> int:
    """Fails its first attempt (the marker file says whether one happened), then succeeds."""
    marker = os.path.join(marker_dir, f"flaky-{i}")
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise ConnectionError(f"flaky service unreachable for {i}")
    return i


def total(values: list[int]) -> int:
    return sum(values)


N_TASKS = 1_000
N_FLAKY = 5
KILL_AFTER = 300


@dataclass
class Incident:
    ledger: str
    bad: set[str]
    flaky: set[str]
    good: set[str]
    dependent: str
    dependent_root: str
    killed: str


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    """Stage the incident once; the tests ask their questions of the ledger it leaves."""
    tmp = tmp_path_factory.mktemp("incident")
    ledger = tmp / "incident.db"
    with (
        config.set({"scheduler.worker-ttl": "3s"}),
        LocalCluster(
            n_workers=3, threads_per_worker=2, host="127.0.0.1", nanny=False, ledger=ledger
        ) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(work, range(N_TASKS), seconds=0.01)
        root = next(f for i, f in enumerate(futures) if is_bad(i))
        dependent = client.submit(total, [root, futures[0], futures[1]], key="total-1")
        retried = client.map(flaky, range(N_FLAKY), marker_dir=str(tmp), retries=2)
        poll(lambda: sum(f.done() for f in futures) >= KILL_AFTER, timeout=30, what="progress")
        workers = client.scheduler_info()["workers"]
        killed = max(workers, key=lambda a: workers[a]["in_memory"])
        process = next(
            w.process
            for w in cluster.workers.values()
            if w.process.pid == cluster.scheduler.workers[killed].pid
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait([*futures, dependent, *retried], timeout=60)
        keys = [f.key for f in futures]
        yield_value = Incident(
            ledger=str(ledger),
            bad={key for i, key in enumerate(keys) if is_bad(i)},
            flaky={f.key for f in retried},
            good={key for i, key in enumerate(keys) if not is_bad(i)},
            dependent=dependent.key,
            dependent_root=root.key,
            killed=killed,
        )
    yield yield_value


def storied(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def json_rows(*args: str) -> list[dict]:
    return [json.loads(line) for line in storied(*args, "--json").splitlines()]


def test_which_tasks_failed_and_why(incident: Incident) -> None:
    erred = json_rows("tasks", "--ledger", incident.ledger, "--state", "erred")
    by_key = {row["key"]: row for row in erred}
    assert set(by_key) == incident.bad | {incident.dependent}
    for key in incident.bad:
        assert by_key[key]["exception"].startswith("ValueError: bad input ")
        assert by_key[key]["failures"] == 1 and by_key[key]["blame"] is None
    assert by_key[incident.dependent]["blame"] == incident.dependent_root
    assert by_key[incident.dependent]["executions"] == 0

    key = sorted(incident.bad)[0]
    story = storied("story", key, "--ledger", incident.ledger)
    assert "processing -> erred" in story
    assert "Traceback (most recent call last)" in story
    assert ", in work\n" in story and "\n    ValueError: bad input" in story
    assert "attempt 1 on tcp://" in story and " erred: ValueError: bad input" in story
    dependent_story = storied("story", incident.dependent, "--ledger", incident.ledger)
    assert f"erred because {incident.dependent_root} did: ValueError" in dependent_story


def test_which_tasks_were_retried(incident: Incident) -> None:
    retried = json_rows("tasks", "--ledger", incident.ledger, "--failed", "--state", "memory")
    assert {row["key"] for row in retried} == incident.flaky
    assert all(row["failures"] == 1 and row["executions"] >= 2 for row in retried)
    events = json_rows("events", "retried", "--ledger", incident.ledger)
    assert {e["msg"]["key"] for e in events} == incident.flaky
    assert all(e["msg"]["attempt"] == 1 for e in events)
    assert all("ConnectionError: flaky service" in e["msg"]["exception"] for e in events)
    story = storied("story", sorted(incident.flaky)[0], "--ledger", incident.ledger)
    assert "processing -> released" in story and " retried: ConnectionError" in story
    assert "in flaky" in story and "processing -> memory" in story


def test_what_was_recomputed_after_the_worker_loss(incident: Incident) -> None:
    removals = [
        e["msg"]
        for e in json_rows("events", "all", "--ledger", incident.ledger)
        if e["msg"].get("action") == "remove-worker"
    ]
    (removal,) = [r for r in removals if r["worker"] == incident.killed]
    lost = set(removal["lost-tasks"])
    assert lost, "the killed worker held results"
    tasks = {row["key"]: row for row in json_rows("tasks", "--ledger", incident.ledger)}
    for key in lost - incident.bad:
        assert tasks[key]["state"] == "memory"
        assert tasks[key]["worker"] != incident.killed, f"{key} was not recomputed elsewhere"
    recomputed = {
        key
        for key, row in tasks.items()
        if incident.killed in row["workers"] and row["executions"] - row["failures"] > 1
    }
    assert recomputed and recomputed <= lost
    key = sorted(recomputed)[0]
    story = json_rows("story", key, "--ledger", incident.ledger)
    caused = [
        r for r in story if r["stimulus_id"] == removal["stimulus_id"] and r["where"] == "scheduler"
    ]
    assert caused and caused[0]["start"] in ("memory", "processing")


def test_what_a_key_did_step_by_step(incident: Incident) -> None:
    tasks = json_rows("tasks", "--ledger", incident.ledger, "--state", "memory")
    key = next(row["key"] for row in tasks if row["executions"] == 1 and row["failures"] == 0)
    rows = json_rows("story", key, "--ledger", incident.ledger)
    scheduler = [(r["start"], r["finish"]) for r in rows if r["where"] == "scheduler"]
    assert scheduler[:3] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
    ]
    assert any(r["where"] != "scheduler" and r["finish"] == "memory" for r in rows)
    assert {r["run_id"] for r in rows} == {1}
    table = storied("story", key, "--ledger", incident.ledger, "--run", "1").splitlines()
    assert table[0].split()[:2] == ["RUN", "TIME"] and len(table) == len(rows) + 1


def test_which_events_fell_in_a_window(incident: Incident) -> None:
    every = json_rows("events", "--ledger", incident.ledger)
    assert len(every) > 10
    times = sorted(e["timestamp"] for e in every)
    since, until = times[len(times) // 4], times[3 * len(times) // 4]
    window = json_rows(
        "events", "--ledger", incident.ledger, "--since", str(since), "--until", str(until)
    )
    expected = [e["seq"] for e in every if since <= e["timestamp"] < until]
    assert [e["seq"] for e in window] == expected and expected

    every_task = json_rows("tasks", "--ledger", incident.ledger)
    ran = sorted(row["started"] for row in every_task if row["executions"])
    since, until = ran[len(ran) // 3], ran[len(ran) // 2]
    in_window = json_rows(
        "tasks", "--ledger", incident.ledger, "--since", str(since), "--until", str(until)
    )

    def active(row: dict) -> tuple[float, float]:
        if row["executions"]:
            return row["started"], row["stopped"]
        return row["first_time"], row["last_time"]

    expected_keys = {
        row["key"] for row in every_task if active(row)[1] >= since and active(row)[0] < until
    }
    assert {row["key"] for row in in_window} == expected_keys
    assert 0 < len(expected_keys) < len(every_task) // 2


def test_runs_counts_what_the_run_did(incident: Incident) -> None:
    (run,) = json_rows("runs", "--ledger", incident.ledger)
    assert run["erred"] == len(incident.bad) + 1  # the dependent erred too
    assert run["failures"] == len(incident.bad) + len(incident.flaky)
    assert run["retried"] == len(incident.flaky)
    assert run["workers"] == 3 and run["tasks"] == N_TASKS + N_FLAKY
    assert run["duration"] > 0


def test_slowest_and_worker_filters(incident: Incident) -> None:
    slowest = json_rows("tasks", "--ledger", incident.ledger, "--slowest", "3")
    assert len(slowest) == 3
    durations = [row["duration"] for row in slowest]
    assert durations == sorted(durations, reverse=True)
    on_killed = json_rows("tasks", "--ledger", incident.ledger, "--worker", incident.killed)
    assert on_killed and all(incident.killed in row["workers"] for row in on_killed)
    prefixed = json_rows("tasks", "--ledger", incident.ledger, "--prefix", "flaky")
    assert {row["key"] for row in prefixed} == incident.flaky


def test_what_the_killed_worker_s_memory_was_when_it_died(incident: Incident) -> None:
    (removal,) = [
        e
        for e in json_rows("events", incident.killed, "--ledger", incident.ledger)
        if e["msg"]["action"] == "remove-worker"
    ]
    assert removal["msg"]["cause"] in ("connection-lost", "heartbeat-timeout")
    assert removal["msg"]["processing-tasks"] or removal["msg"]["lost-computed-tasks"]
    samples = json_rows("top", "--ledger", incident.ledger, "--worker", incident.killed)
    assert samples and {s["worker"] for s in samples} == {incident.killed}
    last = samples[-1]
    assert last["time"] < removal["timestamp"] and last["memory"] > 10_000_000
    assert last["managed_bytes"] > 0, "it held results when it died"
    chart = storied("top", "--ledger", incident.ledger, "--worker", incident.killed)
    memory = next(line for line in chart.splitlines() if line.startswith("  memory (rss) "))
    assert f"last {last['memory'] / 2**20:.2f} MiB" in memory
    assert "removed at " in chart and removal["msg"]["cause"] in chart
