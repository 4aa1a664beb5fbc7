"""A worker SIGKILLed mid-task, and resource telemetry, read from the ledger after the fact.

Two worker processes under nannies, with a ledger: a result fetched from one worker by the
other (a transfer), a task blocked on the first worker when the test SIGKILLs its process.
The cluster is gone before the CLI is asked; the live API is asked while it runs.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner
from engine.helpers import inc, poll, wait_for_file

from storied import Client, LocalCluster
from storied.cli.main import cli
from storied.worker.telemetry import SAMPLE_FIELDS


def add(x: int, y: int) -> int:
    return x + y


@dataclass
class Loss:
    ledger: str
    killed: str
    killed_name: str
    survivor: str
    survivor_name: str
    blocked: str
    fetched: str
    dependent: str
    metrics: dict[str, list[dict[str, Any]]]
    named_metrics: dict[str, list[dict[str, Any]]]
    recent_metrics: dict[str, list[dict[str, Any]]]
    newest_sample: dict[str, Any] | None
    since: float


def worker_named(client: Client, name: str) -> str:
    return next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == name)


@pytest.fixture(scope="module")
def loss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loss]:
    tmp = tmp_path_factory.mktemp("loss")
    ledger = tmp / "loss.db"
    with (
        LocalCluster(n_workers=2, threads_per_worker=2, ledger=ledger) as cluster,
        Client(cluster) as client,
    ):
        doomed, spared = worker_named(client, "0"), worker_named(client, "1")
        fetched = client.submit(inc, 1, workers=[doomed], key="fetched-1")
        dependent = client.submit(add, fetched, 10, workers=[spared], key="dependent-1")
        assert dependent.result(timeout=30) == 12
        blocked = client.submit(
            wait_for_file, str(tmp / "never"), 60, workers=[doomed], key="blocked-1"
        )
        poll(
            lambda: getattr(cluster.scheduler.tasks.get(blocked.key), "started", False),
            timeout=30,
            what="the blocked task started",
        )
        poll(
            lambda: all(
                len(client.get_worker_metrics().get(address, [])) >= 2
                for address in (doomed, spared)
            ),
            timeout=30,
            what="two resource samples from each worker",
        )
        metrics = client.get_worker_metrics()
        named_metrics = client.get_worker_metrics(workers="1")
        since = metrics[spared][-1]["time"]
        recent_metrics = client.get_worker_metrics(workers=[spared], since=since)
        newest_sample = client.scheduler_info()["workers"][spared]["metrics"]
        pid = client.scheduler_info()["workers"][doomed]["pid"]
        os.kill(pid, signal.SIGKILL)
        poll(
            lambda: doomed not in client.scheduler_info()["workers"],
            timeout=30,
            what="the killed worker removed",
        )
        staged = Loss(
            ledger=str(ledger),
            killed=doomed,
            killed_name="0",
            survivor=spared,
            survivor_name="1",
            blocked=blocked.key,
            fetched=fetched.key,
            dependent=dependent.key,
            metrics=metrics,
            named_metrics=named_metrics,
            recent_metrics=recent_metrics,
            newest_sample=newest_sample,
            since=since,
        )
    yield staged  # the cluster is gone: the CLI reads the ledger alone


def storied(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def json_rows(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in storied(*args, "--json").splitlines()]


def removal_of(loss: Loss) -> dict[str, Any]:
    (removal,) = [
        row["msg"]
        for row in json_rows("events", loss.killed, "--ledger", loss.ledger)
        if row["msg"]["action"] == "remove-worker"
    ]
    return removal


def test_a_sigkilled_worker_s_removal_names_the_signal_and_its_processing_keys(loss):
    removal = removal_of(loss)
    assert removal["cause"] == "killed"
    assert (removal["signal"], removal["exit-code"]) == ("SIGKILL", None)
    assert "killed by SIGKILL" in removal["reason"]
    assert removal["expected"] is False
    assert removal["processing-tasks"] == [loss.blocked]
    assert removal["lost-computed-tasks"] == [loss.fetched]
    assert removal["lost-scattered-tasks"] == []
    assert removal["stimulus_id"].startswith("worker-lost-killed-")
    assert removal["name"] == loss.killed_name
    story = storied("story", removal["stimulus_id"], "--ledger", loss.ledger)
    assert loss.blocked in story and "processing -> released" in story


def test_the_ledger_holds_metrics_after_the_cluster_is_gone_and_top_charts_them(loss):
    rows = json_rows("top", "--ledger", loss.ledger)
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row)
    assert {loss.killed, loss.survivor} <= set(by_worker)
    for samples in by_worker.values():
        assert set(SAMPLE_FIELDS) <= set(samples[0])
        assert all(s["memory"] > 10_000_000 for s in samples), "an RSS of a Python process"
        assert all(s["sockets"] >= 2 for s in samples), "the scheduler link, the listener"
        assert all(s["num_fds"] >= s["sockets"] for s in samples)
    assert {s["name"] for s in by_worker[loss.killed]} == {loss.killed_name}
    removal_time = next(
        row["timestamp"]
        for row in json_rows("events", loss.killed, "--ledger", loss.ledger)
        if row["msg"]["action"] == "remove-worker"
    )
    assert max(s["time"] for s in by_worker[loss.killed]) < removal_time
    served = by_worker[loss.killed][-1]["transfer_outgoing_bytes_total"]
    fetched = by_worker[loss.survivor][-1]["transfer_incoming_bytes_total"]
    assert served > 0 and fetched > 0, "one result went from the doomed worker to the other"

    text = storied("top", "--ledger", loss.ledger)
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), "readable in 100 columns"
    assert f"{loss.killed} ({loss.killed_name}): " in text
    assert f"{loss.survivor} ({loss.survivor_name}): " in text
    killed_at = next(i for i, line in enumerate(lines) if line.startswith(f"{loss.killed} ("))
    header = " ".join(line.strip() for line in lines[killed_at : killed_at + 2])
    assert ": killed, worker process " in header and "was killed by SIGKILL" in header
    for label in ("cpu", "memory (rss)", "sockets", "host net in", "fetched", "served"):
        assert any(line.startswith(f"  {label} ") for line in lines), label
    only = storied("top", "--ledger", loss.ledger, "--worker", loss.survivor_name)
    assert loss.survivor in only and f"{loss.killed} (" not in only


def test_top_says_when_a_run_has_no_metrics(loss, tmp_path):
    result = CliRunner().invoke(cli, ["top", "--ledger", loss.ledger, "--worker", "no-such-worker"])
    assert result.exit_code != 0
    assert "has no worker metrics for no-such-worker" in result.output


def test_worker_names_show_beside_addresses_in_story_tasks_and_logs_output(loss):
    story = storied("story", loss.dependent, "--ledger", loss.ledger)
    assert f"{loss.survivor} ({loss.survivor_name})" in story
    fetched = storied("story", loss.fetched, "--ledger", loss.ledger)
    assert f"{loss.killed} ({loss.killed_name})" in fetched
    tasks = storied("tasks", "--ledger", loss.ledger, "--prefix", "dependent")
    assert f"{loss.survivor} ({loss.survivor_name})" in tasks
    logs = storied("logs", "--ledger", loss.ledger, "--worker", loss.survivor)
    assert f"{loss.survivor} ({loss.survivor_name})" in logs


def test_the_timeline_marks_the_loss_and_shows_the_transfer(loss, tmp_path):
    output = tmp_path / "trace.json"
    storied("timeline", "--ledger", loss.ledger, "-o", str(output))
    events = json.loads(output.read_text())["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    pid_of = {name.split(" ")[0]: pid for pid, name in processes.items()}
    assert processes[pid_of[loss.killed]] == f"{loss.killed} ({loss.killed_name})"
    markers = {e["pid"]: e for e in events if e.get("cat") == "worker-loss"}
    assert {pid_of[loss.killed], pid_of[loss.survivor]} <= set(markers), "closing removes it"
    assert markers[pid_of[loss.survivor]]["name"] == "worker removed: closed"
    marker = markers[pid_of[loss.killed]]
    assert marker["ph"] == "i"
    assert marker["name"] == "worker removed: killed"
    assert marker["args"]["processing-tasks"] == [loss.blocked]
    [transfer] = [e for e in events if e.get("cat") == "transfer"]
    assert transfer["name"] == loss.fetched and transfer["pid"] == pid_of[loss.survivor]
    assert transfer["dur"] >= 0


def test_the_live_api_gives_each_worker_s_samples(loss):
    assert set(loss.metrics) == {loss.killed, loss.survivor}
    for samples in loss.metrics.values():
        assert len(samples) >= 2
        assert [s["time"] for s in samples] == sorted(s["time"] for s in samples)
        assert list(samples[0]) == list(SAMPLE_FIELDS)
    assert set(loss.named_metrics) == {loss.survivor}, "a name picks its worker"
    assert loss.recent_metrics[loss.survivor][0]["time"] >= loss.since
    assert loss.newest_sample is not None and set(loss.newest_sample) == set(SAMPLE_FIELDS)


def test_get_worker_metrics_refuses_a_since_that_is_not_a_time(client):
    with pytest.raises(TypeError, match="since must be a time"):
        client.get_worker_metrics(since="yesterday")


def test_remove_worker_carries_dask_s_fields(loss):
    """The fields of Dask's ``remove-worker`` event (a retired worker of a small in-process
    dask cluster of its own) are in ours too."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as dask_cluster,
        distributed.Client(dask_cluster, set_as_default=False) as dask_client,
    ):
        retired = sorted(dask_client.scheduler_info()["workers"])[0]
        dask_client.retire_workers([retired], close_workers=True)
        (dask_removal,) = poll(
            lambda: [
                msg
                for _, msg in dask_client.get_events(retired)
                if msg["action"] == "remove-worker"
            ],
            timeout=30,
            what="dask's remove-worker event",
        )
    assert {"processing-tasks", "lost-computed-tasks", "expected"} <= set(dask_removal)
    assert set(dask_removal) <= set(removal_of(loss))
