"""In-memory history is bounded by its configured lengths, however much happens (issue 5)."""

from __future__ import annotations

import uuid

import pytest
from engine.helpers import poll

from storied import Scheduler, Worker, get_worker

TRANSITIONS_KEPT = 300
WORKER_TRANSITIONS_KEPT = 200
EVENTS_KEPT = 40
N_TASKS = 1_000
N_CLIENT_EVENTS = 500


def logged_inc(x: int, topic: str) -> int:
    get_worker().log_event(topic, {"x": x})
    return x + 1


def worker_log_length(dask_worker: Worker) -> int:
    return len(dask_worker.record.transitions())


def event_counts(dask_scheduler: Scheduler) -> dict[str, int]:
    return dask_scheduler.record.event_counts()


@pytest.mark.parametrize(
    "cluster_config",
    [
        {
            "scheduler.transition-log-length": TRANSITIONS_KEPT,
            "scheduler.events-per-topic": EVENTS_KEPT,
            "worker.transition-log-length": WORKER_TRANSITIONS_KEPT,
        }
    ],
)
def test_in_memory_history_stays_within_its_bounds(fragile_cluster, fragile_client):
    scheduler, client = fragile_cluster.scheduler, fragile_client
    topic = f"bounded-{uuid.uuid4().hex}"

    def lengths() -> dict[str, int]:
        events = client.get_events()
        return {
            "scheduler transitions": len(scheduler.transitions()),
            "events of the busiest topic": max(len(found) for found in events.values()),
            "worker transitions": max(client.run(worker_log_length).values()),
        }

    bounds = {
        "scheduler transitions": TRANSITIONS_KEPT,
        "events of the busiest topic": EVENTS_KEPT,
        "worker transitions": WORKER_TRANSITIONS_KEPT,
    }
    futures = client.map(logged_inc, range(N_TASKS), topic=topic)
    samples = []
    while not all(f.done() for f in futures):
        samples.append(lengths())
    assert client.gather(futures) == list(range(1, N_TASKS + 1))
    for i in range(N_CLIENT_EVENTS):
        client.log_event(topic, {"i": i})
    poll(lambda: client.run_on_scheduler(event_counts).get(topic) == N_TASKS + N_CLIENT_EVENTS)
    samples.append(lengths())

    assert samples[-1] == bounds, "far more happened than is kept: every log is full"
    for sample in samples:
        assert all(sample[name] <= bound for name, bound in bounds.items()), sample
    kept = client.get_events(topic)
    assert [msg for _, msg in kept] == [
        {"i": i} for i in range(N_CLIENT_EVENTS - EVENTS_KEPT, N_CLIENT_EVENTS)
    ], "the newest events are the ones kept"
