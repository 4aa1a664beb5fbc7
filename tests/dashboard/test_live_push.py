"""The logs page's live tail and the tasks page's push, over real HTTP against real clusters,
checked against what the Python API reads."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import urllib.request
from collections.abc import Iterator
from queue import Empty, Queue
from typing import Any

import cloudpickle
import pytest

from storied import Client, LocalCluster
from storied.dashboard import api
from tests.dashboard.conftest import Workload, get, get_json, log_on_worker, root
from tests.engine.helpers import inc, poll

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def ships_logs(dask_worker: Any) -> bool:
    """Whether the worker ships its log records as it captures them (to the scheduler)."""
    return dask_worker.record.log_handler().on_record is not None


class Stream:
    """A server-sent events stream read on a thread of its own: ``(event, data)`` pairs."""

    def __init__(self, url: str) -> None:
        self.response = urllib.request.urlopen(url, timeout=30)
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.messages: Queue[tuple[str, Any]] = Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event = "message"
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.messages.put((event, json.loads(line.removeprefix("data: "))))
                    event = "message"
        except (OSError, ValueError, AttributeError):  # closed by the test (on its thread)
            return

    def until(self, done: Any, timeout: float = 15.0) -> list[Any]:
        """Every data until ``done(data)`` holds for one (included); fails after ``timeout``."""
        seen: list[Any] = []
        while True:
            try:
                _, data = self.messages.get(timeout=timeout)
            except Empty:
                pytest.fail(f"no such message within {timeout}s; seen: {seen}")
            seen.append(data)
            if done(data):
                return seen

    def close(self) -> None:
        self.response.close()


@pytest.fixture()
def cluster_without_ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Client, str]]:
    """Two worker processes and a scheduler with no ledger: workers ship no logs by default.
    A push that has nothing to say writes a comment every 0.3 s (10 s outside tests)."""
    monkeypatch.setattr(api, "KEEPALIVE", 0.3)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        yield client, root(cluster.dashboard_link)


def test_worker_log_records_are_pushed_to_an_open_tail_without_a_ledger(
    cluster_without_ledger: tuple[Client, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "storied.dashboard")
    client, base = cluster_without_ledger
    assert not any(client.run(ships_logs).values())  # nothing shipped while nobody watches
    tail = Stream(f"{base}/api/v1/logs/tail?level=WARNING&logger=storied.worker.pushtest")
    try:
        # once the tail has answered, every worker ships what it logs: none is missed
        addresses = client.run(log_on_worker, "storied.worker.pushtest", logging.INFO, "quiet")
        client.run(log_on_worker, "storied.worker.pushtest", logging.WARNING, "pushed")
        client.run(log_on_worker, "storied.worker.other", logging.WARNING, "elsewhere")
        arrived: set[str] = set()
        seen = tail.until(lambda r: arrived.add(r["where"]) or arrived == set(addresses))
        assert all(r["message"] == "pushed" and r["level"] == "WARNING" for r in seen)
        assert {r["logger"] for r in seen} == {"storied.worker.pushtest"}
        # the same records as the Python API reads from each worker
        for address, lines in client.get_worker_logs().items():
            assert any("pushed" in line for _, line in lines), address
        assert all(client.run(ships_logs).values())
    finally:
        tail.close()
    # the page went away: once the push notices (its next write fails), shipping stops
    poll(lambda: not any(client.run(ships_logs).values()), timeout=15, what="shipping stopped")
    said = [r.getMessage() for r in caplog.records if r.name == "storied.dashboard"]
    assert any(m.startswith("A logs tail is open: workers ship") for m in said)
    assert any(m.startswith("No logs tail is open: workers stop") for m in said)


def test_a_tail_on_a_scheduler_with_a_ledger_gets_scheduler_and_worker_records(
    workload: Workload,
) -> None:
    client = workload.client
    tail = Stream(f"{workload.base}/api/v1/logs/tail?level=WARNING")
    try:
        logging.getLogger("storied.scheduler.pushtest").warning("from the scheduler")
        (address,) = client.run(
            log_on_worker,
            "storied.worker.pushtest",
            logging.ERROR,
            "from a worker",
            workers=[sorted(client.scheduler_info()["workers"])[0]],
        ).values()
        wanted = {("scheduler", "from the scheduler"), (address, "from a worker")}
        got: set[tuple[str, str]] = set()
        tail.until(lambda r: got.add((r["where"], r["message"])) or wanted <= got)
        newest = get_json(f"{workload.base}/api/v1/logs?level=WARNING&limit=10")
        assert wanted <= {(r["where"], r["message"]) for r in newest}
    finally:
        tail.close()


def test_bad_tail_parameters_are_told(workload: Workload, offline: str) -> None:
    status, body = get(f"{workload.base}/api/v1/logs/tail?level=LOUD")
    assert status == 400 and json.loads(body)["parameter"] == "level"
    status, body = get(f"{offline}/api/v1/logs/tail")
    assert status == 400 and json.loads(body)["parameter"] == "run"
    status, body = get(f"{workload.base}/api/v1/tasks/stream?limit=0")
    assert status == 400 and json.loads(body)["parameter"] == "limit"


def test_the_tasks_page_is_pushed_with_its_filter_and_page(workload: Workload) -> None:
    client = workload.client
    query = "prefix=pushedtask&limit=2&offset=1"
    stream = Stream(f"{workload.base}/api/v1/tasks/stream?{query}")
    try:
        (first,) = stream.until(lambda page: True)
        assert first == {"total": 0, "offset": 1, "limit": 2, "tasks": []}
        futures = [client.submit(inc, n, key=f"pushedtask-{n}") for n in range(3)]
        assert client.gather(futures) == [1, 2, 3]
        pushed = stream.until(
            lambda page: page["total"] == 3 and all(t["executed"] for t in page["tasks"])
        )
        last = pushed[-1]
        assert [t["key"] for t in last["tasks"]] == ["pushedtask-1", "pushedtask-2"]
        assert last == get_json(f"{workload.base}/api/v1/tasks?{query}")
        del futures
    finally:
        stream.close()


def test_a_finished_runs_tasks_are_pushed_once(offline: str) -> None:
    stream = Stream(f"{offline}/api/v1/tasks/stream?limit=5")
    try:
        (page,) = stream.until(lambda page: True)
        assert page == get_json(f"{offline}/api/v1/tasks?limit=5")
    finally:
        stream.close()


async def count_tasks_at_once(dask_scheduler: Any) -> tuple[bool, bool, int]:
    """Two pages asking for the live task table at once; then again after nothing changed.
    Whether they got one table, whether it was kept, and how many tasks it holds."""
    assert dask_scheduler.dashboard is not None
    run = await dask_scheduler.dashboard.catalog.run(None)
    first, second = await asyncio.gather(run.tasks(), run.tasks())
    again = await run.tasks()
    return first is second, again is first, len(first)


async def tails_open(dask_scheduler: Any) -> int:
    run = await dask_scheduler.dashboard.catalog.run(None)
    return run.log_feed.watchers


def test_the_live_task_table_is_counted_once_for_pages_asking_at_once(
    workload: Workload,
) -> None:
    client = workload.client
    shared, kept, held = client.run_on_scheduler(count_tasks_at_once)
    assert shared and kept and held >= len(workload.inc_keys)
    assert client.submit(inc, 7, key="counted-anew").result() == 8
    _, _, now = client.run_on_scheduler(count_tasks_at_once)
    assert now == held + 1  # a task ran since: counted anew


def test_a_scheduler_with_a_ledger_keeps_its_workers_shipping_after_the_last_tail(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "KEEPALIVE", 0.3)
    client = workload.client
    tail = Stream(f"{workload.base}/api/v1/logs/tail?level=CRITICAL")
    assert client.run_on_scheduler(tails_open) >= 1
    tail.close()
    poll(lambda: client.run_on_scheduler(tails_open) == 0, timeout=15, what="the tail ended")
    assert all(client.run(ships_logs).values())  # the ledger still gets their records
