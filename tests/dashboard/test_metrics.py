"""``/metrics`` read with prometheus_client's own parser, against the scheduler's state."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from storied.dashboard.views import key_prefix
from tests.dashboard.conftest import Workload, get


def scrape(workload: Workload) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, body = get(f"{workload.base}/metrics")
    assert status == 200
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(body.decode())
    }


def test_metrics_are_the_scheduler_state_at_scrape_time(workload: Workload) -> None:
    metrics = scrape(workload)
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
    before = scrape(workload)["storied_scheduler_transitions"][()]
    assert workload.client.submit(len, "abc").result() == 3
    assert scrape(workload)["storied_scheduler_transitions"][()] > before
    # the dashboard adds no hook to the scheduler's transitions: it reads at scrape time
    assert workload.cluster.scheduler.state.on_transition is None
