"""``/metrics`` in Prometheus' text format, read from the scheduler when scraped.

A custom collector, not metrics updated as things happen: recording a transition must cost the
scheduler nothing extra, so every number here is counted from its state and record at scrape
time. Names follow Dask's (``dask_scheduler_tasks`` is ``storied_scheduler_tasks``) where Dask
exports the same quantity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from storied.dashboard.views import key_prefix
from storied.scheduler.state import STATES

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

NAMESPACE = "storied"


class SchedulerCollector(Collector):
    """Tasks by state and prefix, workers (and their memory and bytes moved), clients, events,
    transitions, ledger writes."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        scheduler = self.scheduler
        state = scheduler.state
        name = f"{NAMESPACE}_scheduler"
        yield GaugeMetricFamily(
            f"{name}_clients", "Number of clients connected", value=len(scheduler.clients)
        )
        workers = GaugeMetricFamily(
            f"{name}_workers", "Number of workers known by scheduler", labels=["state"]
        )
        busy = Counter(
            _saturation(len(ws.processing), ws.nthreads) for ws in state.workers.values()
        )
        for saturation in ("idle", "partially_saturated", "saturated"):
            workers.add_metric([saturation], busy[saturation])
        yield workers

        by_state: Counter[str] = Counter()
        by_prefix: Counter[tuple[str, str]] = Counter()
        for key, ts in state.tasks.items():
            by_state[ts.state] += 1
            by_prefix[key_prefix(key), ts.state] += 1
        tasks = GaugeMetricFamily(
            f"{name}_tasks", "Number of tasks known by scheduler", labels=["state"]
        )
        for task_state in STATES:
            if task_state != "forgotten":
                tasks.add_metric([task_state], by_state[task_state])
        yield tasks
        prefixes = GaugeMetricFamily(
            f"{name}_prefix_tasks",
            "Number of tasks known by scheduler, by task prefix and state",
            labels=["task_prefix_name", "state"],
        )
        for (prefix, task_state), count in sorted(by_prefix.items()):
            prefixes.add_metric([prefix, task_state], count)
        yield prefixes

        yield from _worker_samples(scheduler)

        record = scheduler.record
        events = CounterMetricFamily(f"{name}_events", "Events logged, by topic", labels=["topic"])
        for topic, count in sorted(record.event_counts().items()):
            events.add_metric([topic], count)
        yield events
        yield CounterMetricFamily(
            f"{name}_transitions",
            "Task transitions the scheduler recorded",
            value=record.transitions_recorded,
        )
        if record.durable:
            yield CounterMetricFamily(
                f"{NAMESPACE}_ledger_written",
                "Records the ledger committed to its file",
                value=record.ledger_written,
            )
            yield CounterMetricFamily(
                f"{NAMESPACE}_ledger_dropped",
                "Records the ledger dropped under overload",
                value=record.dropped,
            )


def _worker_samples(scheduler: Scheduler) -> Iterator[Metric]:
    """Each worker's memory and bytes moved, as of its newest heartbeat sample, under the
    names Dask's workers export them (its ``type`` breakdown of memory; ``process``, the
    whole resident memory, for a worker that keeps no account of its data: no memory limit),
    and storied's ``shm``: the bytes of a worker's shared-memory segments its RSS does not
    show. Results held in those segments count there rather than as ``managed``, so the types
    but ``spilled`` add up to what the memory limits see."""
    telemetry = scheduler.extensions["telemetry"]
    name = f"{NAMESPACE}_worker"
    memory = GaugeMetricFamily(
        f"{name}_memory_bytes", "Memory of each worker process, by type", labels=["worker", "type"]
    )
    moved = {
        direction: CounterMetricFamily(
            f"{name}_transfer_{direction}_bytes",
            f"Bytes of task data each worker {verb} since it started",
            labels=["worker"],
        )
        for direction, verb in (("incoming", "fetched from peers"), ("outgoing", "served"))
    }
    for address in scheduler.state.workers:
        sample = telemetry.newest(address)
        if sample is None:  # no heartbeat yet
            continue
        resident, managed = sample["memory"], sample["managed_bytes"]
        shm = sample.get("shm_bytes") or 0
        if managed is None:
            memory.add_metric([address, "process"], resident)
        else:
            managed = min(max(managed - shm, 0), resident)
            memory.add_metric([address, "managed"], managed)
            memory.add_metric([address, "unmanaged"], resident - managed)
            memory.add_metric([address, "spilled"], sample["spilled_bytes"] or 0)
        memory.add_metric([address, "shm"], shm)
        for direction, family in moved.items():
            count = sample[f"transfer_{direction}_bytes_total"]
            if count is not None:
                family.add_metric([address], count)
    yield memory
    yield from moved.values()


def _saturation(processing: int, nthreads: int) -> str:
    if processing == 0:
        return "idle"
    return "saturated" if processing >= nthreads else "partially_saturated"


def scheduler_registry(scheduler: Scheduler) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): one per scheduler."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SchedulerCollector(scheduler))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
