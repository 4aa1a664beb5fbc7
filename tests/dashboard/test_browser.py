"""The pages in a real browser (Debian's Chromium, headless, driven by Playwright): what a person
would see, live on a cluster and from its ledger after the cluster is gone.

Screenshots go to ``.pytest_cache/dashboard-screenshots/`` (not committed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.dashboard.conftest import Workload, get_json, log_on_worker, spaced_events
from tests.engine.helpers import inc, poll

SHOTS = Path(__file__).resolve().parents[2] / ".pytest_cache" / "dashboard-screenshots"
TIMEOUT_MS = 10_000


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    opened.close()
    assert errors == [], f"the page's script failed: {errors}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def check_status(page: Any, base: str, workload: Workload, name: str, run: str = "") -> None:
    page.goto(f"{base}/status{run}")
    page.wait_for_selector("#workers tr:nth-child(3)")  # a header and two workers
    rows = page.locator("#workers tr").all_inner_texts()
    assert any("127.0.0.1" in row for row in rows[1:])
    assert {row.split("\t")[0] for row in rows[1:]} == {"0", "1"}  # the workers' names
    # live: each worker's memory at its newest heartbeat, pushed as heartbeats come; a
    # finished run: the last each worker sent, from the ledger's worker-metrics events
    page.wait_for_function(
        "[...document.querySelectorAll('#workers tr')].slice(1)"
        ".every((row) => row.cells[3].innerText.endsWith(' MiB'))"
    )
    if "left" in rows[1]:  # a finished run: no load, but memory and CPU as they were last
        shown = page.locator("#workers tr").all_inner_texts()[1:]
        assert {row.split("\t")[6] for row in shown} == {"0"}  # processing
        assert all(row.split("\t")[5].endswith(" %") for row in shown)  # CPU, after shm
    page.wait_for_selector("#task-stream svg rect.task")
    assert page.locator("#task-stream rect.erred").count() == 1
    ran = get_json(f"{base}/api/v1/task-stream{run}")
    assert page.locator("#task-stream rect.task").count() == len(ran) >= 23
    assert page.locator('#progress [data-prefix="inc"]').inner_text().count("20") >= 1
    shot(page, name)


def check_story(page: Any, base: str, workload: Workload, name: str, run: str = "") -> None:
    page.goto(f"{base}/story{run}")
    page.fill("#story-query", workload.failed_key)
    page.click("#story-form button")
    failure = page.wait_for_selector(".failure")
    assert "ValueError: refusing 7" in failure.inner_text()
    traceback = page.locator(".failure pre.traceback").inner_text()
    assert "Traceback (most recent call last)" in traceback and "fail_loudly" in traceback
    assert "processing → erred" in page.locator("#story").inner_text()
    lanes = page.locator("#story-lanes svg text.lane").all_text_contents()
    assert lanes[0] == "scheduler" and len(lanes) == 2 and lanes[1].startswith("tcp://")
    shown = page.locator("#story tr").count() - 1
    assert page.locator("#story-lanes circle.transition").count() == shown
    assert page.locator("#story-lanes circle.failed").count() == 1
    shot(page, name)
    erred_by = page.locator("#story tr", has_text="processing → erred").locator("td").nth(4)
    stimulus = erred_by.inner_text()
    erred_by.get_by_role("link").click()  # the stimulus: what else it moved
    page.wait_for_url(f"**/story?q={quote(stimulus)}*")
    page.wait_for_function(
        "document.getElementById('story-summary').textContent.includes('transitions')"
    )
    assert page.locator("#story-query").input_value() == stimulus
    assert "processing → erred" in page.locator("#story").inner_text()


def check_logs(page: Any, base: str, name: str, run: str = "") -> None:
    page.goto(f"{base}/logs{run}")
    page.wait_for_selector("#logs tr:nth-child(2)")
    assert "INFO" in page.locator("#logs tr td:nth-child(2)").all_inner_texts()
    shot(page, name)  # the default level, INFO: the run's log as it is
    page.select_option("#logs-level", "WARNING")
    poll(
        lambda: all(
            level in ("WARNING", "ERROR", "CRITICAL")
            for level in page.locator("#logs tr td:nth-child(2)").all_inner_texts()
        ),
        what="only warnings and worse are shown",
    )
    assert "refusing 7" in page.locator("#logs").inner_text()


def check_tasks(page: Any, base: str, workload: Workload, name: str, run: str = "") -> None:
    page.goto(f"{base}/tasks{run}{'&' if run else '?'}limit=10")
    page.wait_for_selector("#tasks tr:nth-child(11)")
    total = get_json(f"{base}/api/v1/tasks{run}")["total"]
    assert page.locator("#tasks-pager .page-at").inner_text().strip() == f"1\u201310 of {total}"
    first = page.locator("#tasks tr td:first-child").all_inner_texts()
    page.click("#tasks-pager button.older")
    page.wait_for_function(
        "document.querySelector('#tasks-pager .page-at').textContent.includes('11\u2013')"
    )
    second = page.locator("#tasks tr td:first-child").all_inner_texts()
    shot(page, name)
    assert (
        len(second) == 10
        and not set(first) & set(second)
        and first + second == sorted(first + second)
    )
    page.fill("#tasks-form input[name=state]", "erred")
    page.click("#tasks-form button")
    page.wait_for_function(
        "document.querySelector('#tasks-pager .page-at').textContent.includes('of 1')"
    )
    assert page.locator("#tasks tr td:first-child").all_inner_texts() == [workload.failed_key]
    page.get_by_role("link", name=workload.failed_key).click()  # a task opens its story
    page.wait_for_selector(".failure")


def test_live_pages(page: Any, workload: Workload) -> None:
    base = workload.base
    check_status(page, base, workload, "live-status")
    check_story(page, base, workload, "live-story")
    check_logs(page, base, "live-logs")
    check_tasks(page, base, workload, "live-tasks")
    page.goto(f"{base}/runs")
    page.wait_for_selector("#runs tr:nth-child(2)")
    live = page.locator("#runs tr").nth(1).inner_text().split("\t")
    assert live[2] == "running" and (live[3].endswith(" s") or " min " in live[3])


def test_live_event_arrives_in_the_events_tail(page: Any, workload: Workload) -> None:
    page.goto(f"{workload.base}/events?topic=dashboard-test")
    page.wait_for_selector("#events tr:nth-child(3)")  # the two events already logged
    assert page.locator("#topics").inner_text().count("dashboard-test") == 1
    workload.client.log_event("dashboard-test", {"arrives": "live"})
    arrived = page.wait_for_selector("#events tr.new")
    assert '"arrives":"live"' in arrived.inner_text()
    assert page.locator("#events tr").nth(1).get_attribute("class") == "new"  # newest first
    counted = page.locator("#topics tr", has_text="dashboard-test").locator("td").nth(1)
    assert counted.inner_text() == "3"  # the topic's count follows
    shot(page, "live-events")


def test_live_status_is_pushed_not_polled(page: Any, workload: Workload) -> None:
    """New work shows up on an open status page by server push: after the page has loaded,
    it makes no more requests of its own."""
    page.goto(f"{workload.base}/status")
    page.wait_for_selector("#task-stream svg rect.task")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    futures = workload.client.map(inc, range(5), key=[f"browser-pushed-{i}" for i in range(5)])
    workload.client.gather(futures)
    page.wait_for_selector('#progress [data-prefix="browser-pushed"]')
    assert "ran 5" in page.locator('#progress [data-prefix="browser-pushed"]').inner_text()
    assert int(page.evaluate("document.body.dataset.pushes")) >= 2
    assert asked == []
    release(workload, futures)


def release(workload: Workload, futures: list[Any]) -> None:
    """Let go of ``futures`` and wait until the scheduler has forgotten their keys: the
    package's other tests count the shared cluster's tasks."""
    keys = [future.key for future in futures]
    futures.clear()
    tasks = workload.cluster.scheduler.tasks
    poll(lambda: not any(key in tasks for key in keys), what="the tasks released")


def test_live_log_record_arrives_in_the_logs_tail(page: Any, workload: Workload) -> None:
    """A record a worker logs after the logs page opened appears on it, pushed: the page makes
    no request of its own for it."""
    page.goto(f"{workload.base}/logs?level=WARNING&limit=1")
    page.wait_for_selector("#logs tr:nth-child(2)")
    assert page.locator("#logs-pager .page-at").inner_text().strip() == "1\u20131"
    oldest_shown = page.locator("#logs tr").nth(1).inner_text()
    assert page.evaluate("document.body.dataset.tailing") == "true"
    assert "new records appear as they are logged" in page.locator("#logs-hint").inner_text()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    worker = sorted(workload.client.scheduler_info()["workers"])[0]
    workload.client.run(
        log_on_worker, "storied.worker.browser", logging.WARNING, "logged live", workers=[worker]
    )
    workload.client.run(  # below the page's level: not shown
        log_on_worker, "storied.worker.browser", logging.INFO, "too quiet", workers=[worker]
    )
    arrived = page.wait_for_selector("#logs tr.new")
    cells = arrived.inner_text().split("\t")
    assert cells[1:4] == ["WARNING", worker, "storied.worker.browser"]
    assert "logged live" in cells[4]
    assert page.locator("#logs tr").nth(1).get_attribute("class") == "level-warning new"
    assert "too quiet" not in page.locator("#logs").inner_text()
    assert asked == []
    shot(page, "live-logs-tail")
    # the pushed row is counted, and the next page goes on below what was shown
    assert page.locator("#logs-pager .page-at").inner_text().strip() == "1\u20132"
    page.click("#logs-pager button.older")
    page.wait_for_function(
        "document.querySelector('#logs-pager .page-at').textContent.trim().startsWith('3')"
    )
    assert oldest_shown not in page.locator("#logs").inner_text()


def test_live_task_arrives_in_the_tasks_page(page: Any, workload: Workload) -> None:
    """Tasks submitted after the tasks page opened appear in its counts and rows, pushed,
    with the page's filter kept."""
    page.goto(f"{workload.base}/tasks?prefix=browser-tasks&limit=2")
    page.wait_for_function(
        "document.getElementById('tasks-total').textContent.startsWith('0 tasks')"
    )
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    futures = workload.client.map(inc, range(3), key=[f"browser-tasks-{i}" for i in range(3)])
    workload.client.gather(futures)
    page.wait_for_function(
        "document.getElementById('tasks-total').textContent.startsWith('3 tasks of prefix')"
    )
    page.wait_for_function(  # and ran: each shown task's runs are counted
        "[...document.querySelectorAll('#tasks tr')].slice(1)"
        ".every((row) => row.cells[3].innerText === '1')"
    )
    assert page.locator("#tasks tr td:first-child").all_inner_texts() == [
        "browser-tasks-0",
        "browser-tasks-1",
    ]
    assert page.locator("#tasks-pager .page-at").inner_text().strip() == "1\u20132 of 3"
    assert int(page.evaluate("document.body.dataset.taskPushes")) >= 1
    assert asked == [] and page.locator("#tasks-form input[name=prefix]").input_value() == (
        "browser-tasks"
    )
    release(workload, futures)


def test_offline_pages_from_the_ledger(page: Any, finished: Workload, offline: str) -> None:
    page.goto(offline)
    page.wait_for_selector("#runs tr:nth-child(3)")  # a header and two runs
    runs = page.locator("#runs tr").all_inner_texts()
    on_file = get_json(f"{offline}/api/v1/runs")["runs"]
    durations = [row.split("\t")[3] for row in runs[1:]]  # newest first
    lasted = [r["ended"] - r["started"] for r in reversed(on_file)]
    assert all(text.endswith(" s") for text in durations)  # runs of seconds
    assert [float(text.removesuffix(" s")) for text in durations] == pytest.approx(lasted, abs=0.06)
    assert len(runs) == 3 and all("did not close" not in row for row in runs)
    shot(page, "offline-runs")
    page.locator("#runs tr").nth(2).get_by_role("link", name="status").click()  # the older run
    page.wait_for_url("**/status?run=*")
    run = "?run=" + quote(page.url.split("run=")[1])
    check_status(page, offline, finished, "offline-status", run)
    assert page.locator("#workers").inner_text().count("left") == 2
    check_story(page, offline, finished, "offline-story", run)
    check_logs(page, offline, "offline-logs", run)
    check_tasks(page, offline, finished, "offline-tasks", run)
    page.goto(f"{offline}/events{run}")
    page.wait_for_selector("#topics a")
    page.get_by_role("link", name="erred").click()
    page.wait_for_selector("#events tr:nth-child(2)")
    assert "task-erred" in page.locator("#events").inner_text()
    shot(page, "offline-events")


def shown_events(page: Any) -> list[int]:
    """The ``n`` of each event row, top to bottom."""
    return [
        json.loads(text)["n"]
        for text in page.locator("#events tr td:nth-child(4)").all_inner_texts()
    ]


def test_events_time_window(page: Any, workload: Workload) -> None:
    """From / to narrow a topic's table; with "to" set there is no live tail, with "to" empty
    new events arrive again."""
    topic = "browser-window"
    spaced_events(workload.client, topic, 5)
    page.goto(f"{workload.base}/events?topic={topic}")
    page.wait_for_selector("#events tr:nth-child(6)")
    assert shown_events(page) == [4, 3, 2, 1, 0]
    times = page.locator("#events tr td:first-child").all_inner_texts()  # as a person reads them
    tails: list[str] = []
    page.on("request", lambda request: "/events/tail" in request.url and tails.append(request.url))
    page.fill("#events-form input[name=since]", times[3])  # n=1
    page.fill("#events-form input[name=until]", times[0])  # n=4, not included
    page.click("#events-form button")
    poll(lambda: shown_events(page) == [3, 2, 1], what="only the window's events are shown")
    assert "no live tail" in page.locator("#events-hint").inner_text()
    assert page.evaluate("document.body.dataset.tailing") == "false"
    assert f"since={quote(times[3])}" in page.url.replace(
        "+", "%20"
    )  # the window is in the address
    workload.client.log_event(topic, {"n": 5})
    poll(lambda: len(workload.client.get_events(topic)) == 6, what="event 5 recorded")
    assert tails == [] and shown_events(page) == [3, 2, 1]
    shot(page, "live-events-window")
    page.fill("#events-form input[name=until]", "")  # open-ended: the tail goes on
    page.click("#events-form button")
    poll(lambda: shown_events(page) == [5, 4, 3, 2, 1], what="the window from n=1 on")
    poll(lambda: tails, what="the tail opened")
    workload.client.log_event(topic, {"n": 6})
    arrived = page.wait_for_selector("#events tr.new")
    assert '"n":6' in arrived.inner_text() and shown_events(page)[0] == 6
    page.fill("#events-form input[name=since]", "yesterday")
    page.click("#events-form button")
    told = page.wait_for_selector("main > p.error").inner_text()
    assert "since='yesterday' is not a time" in told and "ISO 8601" in told


def shown_logs(page: Any) -> list[tuple[str, str]]:
    """(time, logger) of each log row shown, read at once (the table may be redrawn)."""
    cells = page.evaluate(
        "[...document.querySelectorAll('#logs tr')].slice(1)"
        ".map((row) => [row.cells[0].innerText, row.cells[3].innerText])"
    )
    return [(when, name) for when, name in cells]


def test_logs_by_logger_and_time_window(page: Any, finished: Workload, offline: str) -> None:
    """On a ledger after the cluster is gone: the logger selector offers the run's loggers and
    their parents; choosing one keeps it and its children; from / to keep a time window."""
    run = get_json(f"{offline}/api/v1/runs")["runs"][0]["id"]
    page.goto(f"{offline}/logs?run={quote(run)}&level=DEBUG")
    page.wait_for_selector("#logs tr:nth-child(2)")
    every = shown_logs(page)
    loggers = page.locator("#logs-logger option").all_inner_texts()
    assert loggers[0] == "(all)" and any(o.startswith("storied.scheduler (") for o in loggers)
    assert {name for _, name in every} - {"storied.scheduler"}, "other loggers than the scheduler's"
    page.select_option("#logs-logger", "storied.scheduler")
    poll(
        lambda: (
            shown_logs(page)
            and all(
                name == "storied.scheduler" or name.startswith("storied.scheduler.")
                for _, name in shown_logs(page)
            )
        ),
        what="only the scheduler's loggers are shown",
    )
    scheduler_rows = shown_logs(page)
    assert scheduler_rows == [row for row in every if row[1].startswith("storied.scheduler")]
    since, until = scheduler_rows[-2][0], scheduler_rows[1][0]  # the second oldest, second newest
    page.fill("#logs-form input[name=since]", since)
    page.fill("#logs-form input[name=until]", until)
    page.click("#logs-form button")
    query = {"run": run, "level": "DEBUG", "logger": "storied.scheduler"}
    expected = get_json(
        f"{offline}/api/v1/logs?{urlencode({**query, 'since': since, 'until': until})}"
    )
    poll(lambda: len(shown_logs(page)) == len(expected), what="the window's rows are shown")
    window = shown_logs(page)
    # a time as shown is its record's cut to the millisecond: compared as text, the same window
    assert window == [row for row in scheduler_rows if since <= row[0] < until]
    assert window and len(window) < len(scheduler_rows)  # rows in, rows out
    assert "of storied.scheduler and its children from" in page.locator("#logs-hint").inner_text()
    shot(page, "offline-logs-window")
    page.reload()  # the filters are in the address: the same rows again
    page.wait_for_selector("#logs tr:nth-child(2)")
    assert (
        shown_logs(page) == window
        and page.locator("#logs-logger").input_value() == "storied.scheduler"
    )
