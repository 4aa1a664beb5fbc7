"""Every list the dashboard shows is paged on the server, and the status page is pushed:
pages put together are the whole list, as the Python API reads it."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from storied import Client, LocalCluster
from storied.dashboard import views
from storied.dashboard.history import LedgerCatalog
from storied.dashboard.views import key_prefix
from storied.record import Ledger
from tests.dashboard.conftest import Workload, get, get_json, root
from tests.engine.helpers import inc, poll


def pages(url: str, limit: int, field: str | None = None) -> list[Any]:
    """Every page of an offset-paged list, put together."""
    found: list[Any] = []
    offset = 0
    while True:
        page = get_json(f"{url}&offset={offset}&limit={limit}")
        rows = page[field] if field else page
        assert len(rows) <= limit
        found += rows
        if len(rows) < limit:
            return found
        offset += limit


def test_tasks_pages_are_the_scheduler_tasks(workload: Workload) -> None:
    url = f"{workload.base}/api/v1/tasks?"
    first = get_json(f"{url}limit=5")
    tasks = workload.cluster.scheduler.tasks
    ran = {e["key"] for e in workload.cluster.scheduler.record.executions()}
    assert first["total"] == len(ran | set(tasks)) and len(first["tasks"]) == 5
    every = pages(url, 7, "tasks")
    assert [t["key"] for t in every] == sorted(ran | set(tasks))
    held = {t["key"]: t["state"] for t in every if t["state"] is not None}
    assert held == {k: ts.state for k, ts in tasks.items()}  # the others ran and were let go
    assert all(t["prefix"] == key_prefix(t["key"]) for t in every)
    incs = get_json(f"{url}prefix=inc&limit=100")
    assert incs["total"] == 20 and {t["key"] for t in incs["tasks"]} == set(workload.inc_keys)
    assert all(t["executed"] == 1 and t["state"] == "memory" for t in incs["tasks"])
    erred = get_json(f"{url}state=erred")["tasks"]
    assert [(t["key"], t["erred"]) for t in erred] == [(workload.failed_key, 1)]


def test_offline_tasks_are_the_ledger_tasks(finished: Workload, offline: str) -> None:
    run = get_json(f"{offline}/api/v1/runs")["runs"][0]
    found = pages(f"{offline}/api/v1/tasks?run={quote(run['id'])}", 6, "tasks")
    expected = Ledger(finished.ledger).tasks(run_id=run["run_id"])
    assert [(t["key"], t["state"], t["worker"]) for t in found] == sorted(
        (t["key"], t["state"], t["worker"]) for t in expected
    )
    erred = get_json(f"{offline}/api/v1/tasks?run={quote(run['id'])}&state=erred")["tasks"]
    assert [t["key"] for t in erred] == [finished.failed_key]


def test_story_pages_are_the_client_story(workload: Workload) -> None:
    url = f"{workload.base}/api/v1/story?q=inc-"
    whole = get_json(url)
    assert whole["total"] == len(whole["transitions"]) > 20
    assert pages(url, 9, "transitions") == whole["transitions"]
    key = workload.inc_keys[3]
    assert len(get_json(f"{workload.base}/api/v1/story?q={quote(key)}")["transitions"]) == len(
        workload.client.story(key)
    )


def first_run(offline: str) -> str:
    return quote(get_json(f"{offline}/api/v1/runs")["runs"][0]["id"])


def test_event_pages_go_on_below_the_oldest_shown(finished: Workload, offline: str) -> None:
    url = f"{offline}/api/v1/events?run={first_run(offline)}"
    every = get_json(f"{url}&limit=10000")
    assert len(every) > 8
    found: list[Any] = []
    page = get_json(f"{url}&limit=4")
    while page:
        found += page
        page = get_json(f"{url}&limit=4&before={page[-1]['seq']}")
    assert found == every


def test_live_event_pages_go_on_below_the_oldest_shown(workload: Workload) -> None:
    """A live topic is read a page at a time (not whole, then cut): the pages put together are
    the topic as ``client.get_events`` reads it."""
    topic = "live-paging"
    for n in range(11):
        workload.client.log_event(topic, {"n": n})
    poll(lambda: len(workload.client.get_events(topic)) == 11, what="the events recorded")
    url = f"{workload.base}/api/v1/events?topic={topic}"
    found: list[Any] = []
    page = get_json(f"{url}&limit=4")
    while page:
        assert len(page) <= 4
        found += page
        page = get_json(f"{url}&limit=4&before={page[-1]['seq']}")
    newest_first = [msg for _, msg in reversed(workload.client.get_events(topic))]
    assert [row["msg"] for row in found] == newest_first


def test_log_pages_are_the_newest_first(finished: Workload, offline: str) -> None:
    url = f"{offline}/api/v1/logs?run={first_run(offline)}&level=DEBUG"
    every = get_json(f"{url}&limit=10000")
    assert len(every) > 6
    assert pages(url, 3) == every


@pytest.mark.parametrize(
    "query", ["tasks?limit=0", "tasks?offset=-1", "logs?limit=10001", "story?q=x&limit=x"]
)
def test_bad_pages_are_told(workload: Workload, query: str) -> None:
    status, body = get(f"{workload.base}/api/v1/{query}")
    assert status == 400 and (b"limit" in body or b"offset" in body), body


def test_status_is_workers_progress_and_task_stream(workload: Workload) -> None:
    base = f"{workload.base}/api/v1"
    found = get_json(f"{base}/status")
    assert found["workers"] == get_json(f"{base}/workers")
    assert found["progress"] == get_json(f"{base}/progress")
    assert found["task_stream"] == get_json(f"{base}/task-stream")


def read_pushes(response: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` status pushes of a server-sent events stream."""
    pushes: list[dict[str, Any]] = []
    event = None
    while len(pushes) < count:
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "status":
            pushes.append(json.loads(line.removeprefix("data: ")))
    return pushes


def without_telemetry(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workers as the status lists them, without the fields each telemetry sample changes."""
    sampled = {"cpu", "memory", "shm"}
    return [
        {name: value for name, value in worker.items() if name not in sampled} for worker in workers
    ]


def test_status_is_pushed_again_when_the_run_changes(workload: Workload) -> None:
    url = f"{workload.base}/api/v1/status/stream"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        (before,) = read_pushes(response, 1)
        # the same workers; their telemetry (a sample a second) may move in between
        assert without_telemetry(before["workers"]) == without_telemetry(
            get_json(f"{workload.base}/api/v1/workers")
        )
        future = workload.client.submit(inc, 1000, key="pushed-1")
        assert future.result() == 1001
        while True:  # pushes come only on change: the next ones show the new task
            (after,) = read_pushes(response, 1)
            if any(e["key"] == "pushed-1" for e in after["task_stream"]):
                break
        prefixes = {p["prefix"]: p for p in after["progress"]}
        assert prefixes["pushed"]["executed"] == 1
        del future


def fail_first(path: str) -> int:
    """Fails while ``path`` holds fewer than two marks: each attempt adds one."""
    marks = Path(path)
    marks.write_text(marks.read_text() + "x" if marks.exists() else "x")
    if len(marks.read_text()) < 2:
        raise RuntimeError(f"attempt {len(marks.read_text())} refused")
    return len(marks.read_text())


def test_every_failed_attempt_is_in_the_story_live_and_offline(tmp_path: Path) -> None:
    """A task that fails once and is retried: its story shows the failed attempt with its
    traceback, and the retry, live and from the ledger."""
    ledger = tmp_path / "retried.db"
    with (
        LocalCluster(n_workers=1, processes=False, ledger=ledger, dashboard_address=":0") as cl,
        Client(cl) as client,
    ):
        future = client.submit(fail_first, str(tmp_path / "marks"), retries=1, key="flaky-1")
        assert future.result() == 2
        found = get_json(f"{root(cl.dashboard_link)}/api/v1/story?q=flaky-1")
    (attempt,) = found["attempts"]
    assert attempt["outcome"] == "retried" and attempt["attempt"] == 1
    assert attempt["exception_type"] == "RuntimeError"
    assert "attempt 1 refused" in attempt["message"] and "fail_first" in attempt["traceback"]
    assert ("processing", "memory") in {(t["start"], t["finish"]) for t in found["transitions"]}

    async def from_the_ledger() -> dict[str, Any]:
        return await views.story(await LedgerCatalog([ledger]).run(None), "flaky-1")

    assert asyncio.run(from_the_ledger())["attempts"] == [attempt]
