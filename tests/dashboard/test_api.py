"""``/api/v1`` on a live cluster and from a ledger, each answer checked against what the Python
API (client, scheduler, ledger) says about the same record."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from functools import partial
from pathlib import Path
from urllib.parse import quote

import pytest

from storied import Client, LocalCluster
from storied.dashboard.views import key_prefix
from storied.record import Ledger, LogRecordEntry
from tests.dashboard.conftest import Workload, get, get_json, root
from tests.engine.helpers import inc, poll


def test_dashboard_link_from_cluster_and_client(workload: Workload) -> None:
    assert workload.cluster.dashboard_link == workload.client.dashboard_link
    assert workload.client.scheduler_info()["dashboard"] == workload.cluster.dashboard_link
    assert workload.cluster.dashboard_link.startswith("http://127.0.0.1:")
    status, body = get(workload.cluster.dashboard_link)
    assert status == 200 and b'data-page="status"' in body
    with Client(workload.cluster.scheduler_address, security=workload.cluster.security) as remote:
        assert remote.dashboard_link == workload.cluster.dashboard_link  # asked of the scheduler


def test_workers_match_scheduler_info(workload: Workload) -> None:
    url = f"{workload.base}/api/v1/workers"
    poll(
        lambda: all(row["memory"] for row in get_json(url)),
        timeout=15,
        what="a heartbeat's sample of each worker",
    )
    before = workload.client.scheduler_info()["workers"]
    rows = get_json(url)
    info = workload.client.scheduler_info()["workers"]
    for row in rows:  # the newest heartbeat's memory and CPU (one may come between the reads)
        newest = [workers[row["address"]]["metrics"] for workers in (before, info)]
        assert row["memory"] > 10 * 2**20
        assert (row["memory"], row["cpu"]) in [(m["memory"], m["cpu"]) for m in newest]
    assert {row["address"]: (row["name"], row["nthreads"]) for row in rows} == {
        address: (worker["name"], worker["nthreads"]) for address, worker in info.items()
    }
    assert all(row["status"] == "running" for row in rows)
    held = sum(row["in_memory"] for row in rows)
    assert held == sum(worker["in_memory"] for worker in info.values()) == 20
    executions = Counter(e["worker"] for e in workload.cluster.scheduler.record.executions())
    assert {row["address"]: row["executions"] for row in rows} == dict(executions)


def test_progress_counts_the_scheduler_tasks(workload: Workload) -> None:
    rows = {row["prefix"]: row for row in get_json(f"{workload.base}/api/v1/progress")}
    expected: Counter[tuple[str, str]] = Counter(
        (key_prefix(key), ts.state) for key, ts in workload.cluster.scheduler.tasks.items()
    )
    got = Counter({(p, s): n for p, row in rows.items() for s, n in row["states"].items()})
    assert got == expected
    assert rows["inc"]["states"] == {"memory": 20} and rows["inc"]["executed"] == 20
    assert rows["fail_loudly"]["states"] == {"erred": 1} and rows["fail_loudly"]["erred"] == 1


def test_task_stream_is_the_record_of_executions(workload: Workload) -> None:
    stream = get_json(f"{workload.base}/api/v1/task-stream")
    executions = workload.cluster.scheduler.record.executions()
    assert sorted((e["key"], e["worker"], e["start"]) for e in stream) == sorted(
        (e["key"], e["worker"], e["start"]) for e in executions
    )
    assert all(e["prefix"] == key_prefix(e["key"]) for e in stream)
    newest = get_json(f"{workload.base}/api/v1/task-stream?limit=3")
    assert [e["stop"] for e in newest] == sorted(e["stop"] for e in stream)[-3:]


def test_story_of_a_key_is_the_client_story(workload: Workload) -> None:
    key = workload.inc_keys[0]
    found = get_json(f"{workload.base}/api/v1/story?q={quote(key)}")
    story = workload.client.story(key)
    assert [
        (t["where"], t["start"], t["finish"], t["stimulus_id"]) for t in found["transitions"]
    ] == [(s.where, s.start, s.finish, s.stimulus_id) for s in story]
    assert found["keys"] == [key] and found["failures"] == {}


def test_story_of_a_failed_task_shows_its_traceback(workload: Workload) -> None:
    found = get_json(f"{workload.base}/api/v1/story?q={quote(workload.failed_key)}")
    failure = found["failures"][workload.failed_key]
    assert failure["exception"] == "ValueError: refusing 7"
    assert "Traceback (most recent call last)" in failure["traceback"]
    assert "fail_loudly" in failure["traceback"]
    assert ("processing", "erred") in {(t["start"], t["finish"]) for t in found["transitions"]}


def test_story_by_key_prefix_and_by_stimulus(workload: Workload) -> None:
    found = get_json(f"{workload.base}/api/v1/story?q=inc-")
    assert found["keys"] == sorted(workload.inc_keys)
    stimulus = found["transitions"][0]["stimulus_id"]
    by_stimulus = get_json(f"{workload.base}/api/v1/story?q={quote(stimulus)}")
    expected = workload.cluster.scheduler.transitions(stimulus_id=stimulus)
    assert {t["seq"] for t in by_stimulus["transitions"]} >= {r.seq for r in expected}
    assert get_json(f"{workload.base}/api/v1/story?q=no-such-key")["transitions"] == []


def test_topics_and_events_match_get_events(workload: Workload) -> None:
    counts = get_json(f"{workload.base}/api/v1/topics")
    events = workload.client.get_events()
    # a heartbeat's sample may be recorded between two reads: that topic grows on its own
    grows = "worker-metrics"
    samples = counts.get(grows, 0)
    assert samples <= len(events.pop(grows, ())) <= samples + 5
    assert {t: n for t, n in counts.items() if t in events} == {
        topic: len(found) for topic, found in events.items()
    }
    assert counts["dashboard"] == 1  # the dashboard's own start is on the record
    rows = get_json(f"{workload.base}/api/v1/events?topic=dashboard-test")
    expected = workload.client.get_events("dashboard-test")
    assert [(r["timestamp"], r["msg"]) for r in rows] == [tuple(e) for e in reversed(expected)]
    every = get_json(f"{workload.base}/api/v1/events?limit=10000")
    more_samples = sum(e["topic"] == grows for e in every) - samples
    assert 0 <= more_samples <= 5 and len(every) == sum(counts.values()) + more_samples
    newest = get_json(f"{workload.base}/api/v1/events?limit=1")
    assert [e["seq"] for e in newest] == [max(e["seq"] for e in every)]


def test_logs_by_level_include_the_scheduler_and_workers(workload: Workload) -> None:
    rows = get_json(f"{workload.base}/api/v1/logs?level=WARNING")
    assert rows and all(r["levelno"] >= logging.WARNING for r in rows)
    shape = [field.name for field in dataclasses.fields(LogRecordEntry)]
    assert all(list(r) == shape for r in rows), "LogRecordEntry.as_dict, as the CLI prints it"
    wheres = {r["where"] for r in rows}
    assert "scheduler" in wheres and set(workload.client.scheduler_info()["workers"]) & wheres
    scheduler_logs = [m for level, m in workload.client.get_scheduler_logs() if level == "WARNING"]
    mine = [r["message"] for r in rows if r["where"] == "scheduler"]
    assert len(mine) == len(scheduler_logs)
    assert all(any(message in line for line in scheduler_logs) for message in mine)


def test_bad_parameters_are_told_not_crashed(workload: Workload) -> None:
    status, body = get(f"{workload.base}/api/v1/task-stream?limit=many")
    assert status == 400 and b"limit must be an integer" in body
    status, body = get(f"{workload.base}/api/v1/logs?level=LOUD")
    assert status == 400 and b"unknown log level" in body
    status, body = get(f"{workload.base}/api/v1/workers?run=3-1")
    assert status == 404 and "one run" in json.loads(body)["error"]
    status, _ = get(f"{workload.base}/api/v1/nothing-here")
    assert status == 404
    assert workload.client.submit(lambda: 1).result() == 1  # the scheduler is fine


def test_offline_api_answers_from_the_ledger(finished: Workload, offline: str) -> None:
    ledger = Ledger(finished.ledger)
    runs = get_json(f"{offline}/api/v1/runs")
    assert runs["live"] is False
    assert [r["run_id"] for r in runs["runs"]] == [r["run_id"] for r in ledger.runs()]
    first, second = runs["runs"]
    assert first["ended"] and second["ended"]
    ran = ledger.executions(first["run_id"])
    assert first["executions"] == len(ran) == 23  # 20 inc, 1 failure, 2 announce
    assert first["erred"] == 1 and second["executions"] == 1
    run = f"run={first['id']}"
    workers = get_json(f"{offline}/api/v1/workers?{run}")
    assert len(workers) == 2 and all(w["status"] == "left" and w["nthreads"] == 1 for w in workers)
    last = {}  # each worker's last heartbeat sample on file, as `storied top` reads them
    for sample in ledger.events("worker-metrics", run_id=first["run_id"]):
        last[sample.msg["worker"]] = sample.msg
    assert {w["address"] for w in workers} == last.keys()
    for w in workers:  # no load offline, but the last memory and CPU each worker sent
        assert w["processing"] == w["in_memory"] == 0
        assert (w["memory"], w["cpu"]) == (last[w["address"]]["memory"], last[w["address"]]["cpu"])
        assert w["memory"] > 10 * 2**20
    assert sum(w["executions"] for w in workers) == len(ran)
    stream = get_json(f"{offline}/api/v1/task-stream?{run}")
    assert sorted(e["key"] for e in stream) == sorted(
        e["key"] for e in ledger.executions(first["run_id"])
    )
    found = get_json(f"{offline}/api/v1/story?{run}&q={quote(finished.failed_key)}")
    story = ledger.story(finished.failed_key, run_id=first["run_id"])
    assert sorted(t["seq"] for t in found["transitions"]) == sorted(r.seq for r in story)
    assert "fail_loudly" in found["failures"][finished.failed_key]["traceback"]
    topics = get_json(f"{offline}/api/v1/topics?{run}")
    assert topics == dict(Counter(e.topic for e in ledger.events(run_id=first["run_id"])))
    logs = get_json(f"{offline}/api/v1/logs?{run}&level=WARNING")
    assert len(logs) == len(ledger.logs("WARNING", run_id=first["run_id"]))
    # without ?run= the newest run answers
    assert len(get_json(f"{offline}/api/v1/task-stream")) == 1


@pytest.mark.parametrize("page", ["status", "tasks", "story", "events", "logs", "runs"])
def test_every_page_is_served_live_and_offline(workload: Workload, offline: str, page: str) -> None:
    for base in (workload.base, offline):
        status, body = get(f"{base}/{page}")
        assert status == 200 and f'data-page="{page}"'.encode() in body


def test_live_pages_show_this_run_not_earlier_ones_on_the_file(tmp_path: Path) -> None:
    """A ledger file kept across runs: the live dashboard shows the running one alone, as the
    offline one shows each run on its own (the client's story covers every run when asked)."""
    ledger = tmp_path / "reused.db"
    for run in (1, 2):
        with (
            LocalCluster(
                n_workers=1, processes=False, ledger=ledger, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(inc, run, key="same-key").result() == run + 1
            client.log_event("mine", {"run": run})
            base = root(cluster.dashboard_link)
            workers = get_json(f"{base}/api/v1/workers")
            assert [w["address"] for w in workers] == list(client.scheduler_info()["workers"])
            mine = f"{base}/api/v1/events?topic=mine"
            events = poll(partial(get_json, mine), what="my event")
            assert [e["msg"] for e in events] == [{"run": run}]
            story = get_json(f"{base}/api/v1/story?q=same-key")["transitions"]
            first = cluster.scheduler.record.first_seq
            assert story and all(t["seq"] >= first for t in story)
            every_run = client.story("same-key", run="all")
            assert len(every_run) == len(story) if run == 1 else len(every_run) > len(story)
