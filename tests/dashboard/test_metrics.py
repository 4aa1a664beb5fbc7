"""``/metrics`` read with prometheus_client's own parser, against the scheduler's state."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from storied import Client, LocalCluster
from storied.dashboard.views import key_prefix
from tests.dashboard.conftest import Workload, get, root
from tests.engine.helpers import poll


def scrape(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(body.decode())
    }


def test_metrics_are_the_scheduler_state_at_scrape_time(workload: Workload) -> None:
    metrics = scrape(workload.base)
    scheduler = workload.cluster.scheduler
    states = Counter(ts.state for ts in scheduler.tasks.values())
    tasks = metrics["storied_scheduler_tasks"]
    assert tasks[(("state", "memory"),)] == states["memory"] == 20
    assert tasks[(("state", "erred"),)] == states["erred"] == 1
    prefixes = metrics["storied_scheduler_prefix_tasks"]
    assert prefixes == {
        (("state", state), ("task_prefix_name", prefix)): count
        for (prefix, state), count in Counter(
            (key_prefix(key), ts.state) for key, ts in scheduler.tasks.items()
        ).items()
    }
    assert sum(metrics["storied_scheduler_workers"].values()) == 2
    assert metrics["storied_scheduler_workers"][(("state", "idle"),)] == 2
    assert metrics["storied_scheduler_clients"][()] == len(scheduler.clients)
    # counters: prometheus_client's parser names the family without its "_total"
    events = metrics["storied_scheduler_events"]
    expected = scheduler.record.event_counts()
    assert {dict(labels)["topic"]: n for labels, n in events.items()} == expected
    recorded = metrics["storied_scheduler_transitions"][()]
    assert recorded == len(scheduler.transitions(where="scheduler")) > 20 * 3
    assert metrics["storied_ledger_dropped"][()] == 0
    assert metrics["storied_ledger_written"][()] > 0


def test_metrics_follow_new_work_and_cost_nothing_per_transition(workload: Workload) -> None:
    before = scrape(workload.base)["storied_scheduler_transitions"][()]
    assert workload.client.submit(len, "abc").result() == 3
    assert scrape(workload.base)["storied_scheduler_transitions"][()] > before
    # the dashboard adds no hook to the scheduler's transitions: it reads at scrape time
    assert workload.cluster.scheduler.state.on_transition is None


def make_bytes(size: int) -> bytes:
    return b"x" * size


def test_each_workers_memory_and_bytes_moved() -> None:
    """Dask's worker names, as of each worker's newest heartbeat: a result fetched from one
    worker by another counts as its bytes served and the other's fetched."""
    with (
        LocalCluster(n_workers=2, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        base = root(cluster.dashboard_link)
        first, second = sorted(client.scheduler_info()["workers"])
        made = client.submit(make_bytes, 200_000, workers=[first])
        assert client.submit(len, made, workers=[second]).result() == 200_000

        def moved() -> dict[str, Any] | None:
            metrics = scrape(base)
            served = metrics.get("storied_worker_transfer_outgoing_bytes", {})
            return metrics if served.get((("worker", first),), 0) >= 200_000 else None

        metrics = poll(moved, timeout=15, what="a heartbeat telling the bytes moved")
        fetched = metrics["storied_worker_transfer_incoming_bytes"]
        assert fetched[(("worker", second),)] >= 200_000
        memory = metrics["storied_worker_memory_bytes"]
        for address in (first, second):
            newest = cluster.scheduler.extensions["telemetry"].newest(address)
            types = {dict(labels)["type"] for labels in memory if dict(labels)["worker"] == address}
            assert types == (
                {"process", "shm"}
                if newest["managed_bytes"] is None
                else {"managed", "unmanaged", "spilled", "shm"}
            )
            total = sum(v for labels, v in memory.items() if dict(labels)["worker"] == address)
            assert total >= 10 * 2**20  # a process's resident memory, at least
        del made
