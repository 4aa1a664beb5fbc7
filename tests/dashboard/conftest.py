"""A live cluster with a ledger that has done some work (and failed once), and HTTP helpers."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from storied import Client, LocalCluster, get_worker
from tests.engine.helpers import inc, interruptible, poll

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fail_loudly(x: int) -> int:
    raise ValueError(f"refusing {x}")


def announce(topic: str, n: int) -> str:
    get_worker().log_event(topic, {"announced": n})
    return get_worker().address


def log_on_worker(logger_name: str, level: int, message: str, dask_worker: Any) -> str:
    """Log ``message`` on the worker this runs on (``client.run``); its address."""
    logging.getLogger(logger_name).log(level, message)
    return dask_worker.address


def after_now(margin: float = 0.002) -> None:
    """Wait until the clock has gone ``margin`` past now: what is logged next is later (the
    pages show milliseconds)."""
    later = time.time() + margin
    poll(lambda: time.time() > later, what="the clock moved on")


def spaced_events(client: Client, topic: str, count: int) -> tuple[tuple[float, Any], ...]:
    """Log ``count`` events ``{"n": 0}``... of ``topic``, each 2 ms after the one before at
    least; the topic's events as ``client.get_events`` reads them then."""
    for n in range(count):
        client.log_event(topic, {"n": n})
        poll(lambda n=n: len(client.get_events(topic)) == n + 1, what=f"event {n} recorded")
        after_now()
    return client.get_events(topic)


@dataclass
class Workload:
    cluster: LocalCluster
    client: Client
    ledger: Path
    base: str  # the dashboard's root URL
    inc_keys: list[str]
    failed_key: str


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, body
    return json.loads(body)


def root(link: str) -> str:
    return link.removesuffix("/status")


def cluster_with_ledger(ledger: Path) -> LocalCluster:
    return LocalCluster(
        n_workers=2, threads_per_worker=1, ledger=ledger, dashboard_address="127.0.0.1:0"
    )


def run_workload(cluster: LocalCluster, client: Client, ledger: Path) -> Workload:
    """Twenty tasks, one failure and events under a topic of the test's own."""
    futures = client.map(inc, range(20))
    client.gather(futures)
    failed = client.submit(fail_loudly, 7)
    with pytest.raises(ValueError):
        failed.result()
    client.gather(client.map(announce, ["dashboard-test"] * 2, range(2)))
    poll(lambda: client.get_events("dashboard-test"), what="the workers' events arrived")
    return Workload(
        cluster, client, ledger, root(cluster.dashboard_link), [f.key for f in futures], failed.key
    )


@pytest.fixture(scope="package")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workload]:
    """A live cluster of two worker processes with a ledger, after ``run_workload``."""
    ledger = tmp_path_factory.mktemp("live") / "history.db"
    with cluster_with_ledger(ledger) as cluster, Client(cluster) as client:
        yield run_workload(cluster, client, ledger)


@pytest.fixture(scope="package")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    """A ledger file of two runs whose clusters are gone: ``run_workload``, then one task."""
    ledger = tmp_path_factory.mktemp("offline") / "history.db"
    with cluster_with_ledger(ledger) as cluster, Client(cluster) as client:
        done = run_workload(cluster, client, ledger)
        poll(  # each worker's memory is on file (a sample a heartbeat, every second)
            lambda: len({e["worker"] for _, e in client.get_events("worker-metrics")}) == 2,
            timeout=15,
            what="a resource sample of each worker",
        )
    with cluster_with_ledger(ledger) as cluster, Client(cluster) as client:
        assert client.submit(inc, 100).result() == 101
    return done


@contextlib.contextmanager
def serving(ledger: Path) -> Iterator[str]:
    """``storied dashboard --ledger`` serving ``ledger`` in a process of its own; its root
    URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "storied", "dashboard", "--ledger", str(ledger), "--port=0"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # the first line names the address (or the error)
        match = re.search(r"(http://\S+)/runs", line)
        assert match, f"storied dashboard said: {line}"
        yield match.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


@pytest.fixture(scope="package")
def offline(finished: Workload) -> Iterator[str]:
    """The dashboard of ``finished``'s file, served by ``storied dashboard``; its root URL."""
    with serving(finished.ledger) as base:
        yield base
