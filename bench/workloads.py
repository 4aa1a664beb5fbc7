#!/usr/bin/env python3
"""One benchmark measurement: start a system, run one workload, print one JSON line.

bench/run starts this script in a fresh process, in the venv of the system under test, so no
measurement inherits another's warm caches or leaked threads. Only the standard library is
imported at module level: the driver imports this module (from any Python) to read
``WORKLOADS``, and each backend imports its own system lazily.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import math
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

N_WORKERS = 2
THREADS_PER_WORKER = 1
EVENT_TOPIC = "bench"
DONE_TOPIC = "bench-done"
WORKER_EVENT_TASKS = 10
STORY_LOOKUPS = 200
POLL_INTERVAL_S = 0.02
SETTLE_S = 1.0
WAIT_DEADLINE_S = 300.0
#: the churn workload (issue 15): worker processes under nannies, one SIGKILLed this often,
#: each task taking this long (so a tree of thousands of tasks outlives many kills)
CHURN_WORKERS = 3
CHURN_KILL_INTERVAL_S = 5.0
CHURN_TASK_S = 0.01
#: the churn_stream workload: trees of cheap tasks back to back for this long, under the same
#: kills, so the scheduler's recovery rather than the tasks' sleep limits the throughput
CHURN_STREAM_S = 40.0
#: how long the tree still running when the stream ends may take before it is given up on
CHURN_STREAM_GRACE_S = 60.0

#: storied with transition recording switched off, to show what the record costs
NO_RECORD = "storied-norecord"
NO_RECORD_ENVIRONMENT = {
    "STORIED_SCHEDULER__RECORD_TRANSITIONS": "false",
    "STORIED_WORKER__RECORD_TRANSITIONS": "false",
}
#: storied with the durable SQLite ledger on, to show what durability costs
WITH_LEDGER = "storied-ledger"
#: storied with resource telemetry (a sample with every heartbeat) off, to show what it costs
NO_TELEMETRY = "storied-notelemetry"
NO_TELEMETRY_ENVIRONMENT = {"STORIED_WORKER__TELEMETRY": "false"}
#: storied with shared memory forced on (``storied`` has it on too where ``/dev/shm`` allows:
#: ``worker.shared-memory: auto``)
WITH_SHM = "storied-shm"
WITH_SHM_ENVIRONMENT = {"STORIED_WORKER__SHARED_MEMORY": "true"}
#: storied with shared memory forced off: every large result over TCP (issue 14's TCP goals)
TCP_ONLY = "storied-tcp"
TCP_ONLY_ENVIRONMENT = {"STORIED_WORKER__SHARED_MEMORY": "false"}
#: storied without scheduler-side queuing (``worker-saturation: inf``), to show what it costs
NO_QUEUE = "storied-noqueue"
NO_QUEUE_ENVIRONMENT = {"STORIED_SCHEDULER__WORKER_SATURATION": "inf"}
FUTURES_SYSTEMS = frozenset(
    {"storied", NO_RECORD, WITH_LEDGER, NO_TELEMETRY, NO_QUEUE, WITH_SHM, TCP_ONLY, "dask"}
)
TASK_SYSTEMS = FUTURES_SYSTEMS | {"ray"}
#: not a scheduler: two plain Python processes copying bytes over loopback TCP, the reference
#: a data transfer is measured against
RAW_TCP = "raw-tcp"
ALL_SYSTEMS = TASK_SYSTEMS | {"pool", RAW_TCP}
SYSTEM_MODULES = {
    "storied": "storied",
    NO_RECORD: "storied",
    NO_QUEUE: "storied",
    WITH_LEDGER: "storied",
    NO_TELEMETRY: "storied",
    WITH_SHM: "storied",
    TCP_ONLY: "storied",
    "dask": "distributed",
}


# --- task functions (shipped by value: this file runs as __main__) -----------------------------


def noop(x: int) -> None:
    return None


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def slow_inc(x: int) -> int:
    time.sleep(CHURN_TASK_S)
    return x + 1


def slow_add(a: int, b: int) -> int:
    time.sleep(CHURN_TASK_S)
    return a + b


def make_array(nbytes: int) -> Any:
    import numpy

    return numpy.full(nbytes, 1, dtype="u1")


def make_bytes(nbytes: int) -> bytes:
    return b"\x01" * nbytes


def nbytes_of(value: Any) -> int:
    return int(getattr(value, "nbytes", None) or len(value))


def touch_pages(value: Any) -> int:
    """Read one byte of every 4 KiB page: what any use of a value costs at least, where its
    memory is mapped rather than received (the page faults), and nearly nothing otherwise."""
    import numpy

    return int(numpy.frombuffer(value, dtype="u1")[::4096].sum())


def log_event_range(module_name: str, first: int, count: int) -> int:
    """Log ``count`` events from inside a task, then a marker saying this task's share is sent."""
    worker = importlib.import_module(module_name).get_worker()
    for i in range(first, first + count):
        worker.log_event(EVENT_TOPIC, {"i": i})
    worker.log_event(DONE_TOPIC, {"first": first})
    return count


# --- functions run on the scheduler via run_on_scheduler ---------------------------------------


def time_story_lookups(keys: list[str], dask_scheduler: Any = None) -> dict[str, float]:
    """Time ``scheduler.story(key)`` for each key where the scheduler lives."""
    seconds = []
    shortest = math.inf
    for key in keys:
        started = time.perf_counter()
        story = dask_scheduler.story(key)
        seconds.append(time.perf_counter() - started)
        shortest = min(shortest, len(story))
    return {"median_s": statistics.median(seconds), "shortest_story": shortest}


def scheduler_task_count(dask_scheduler: Any = None) -> int:
    """Tasks the scheduler still tracks: dask keeps them on the server, storied on its state."""
    owner = dask_scheduler if hasattr(dask_scheduler, "tasks") else dask_scheduler.state
    return len(owner.tasks)


def finished_runs(dask_scheduler: Any = None) -> tuple[int, int]:
    """(runs that ended in memory, distinct keys among them), read from the scheduler's own
    transition log: dask's ``transition_log``, storied's record."""
    if hasattr(dask_scheduler, "transition_log"):
        keys = [
            str(t.key)
            for t in dask_scheduler.transition_log
            if t.start == "processing" and t.finish == "memory"
        ]
    else:
        keys = [r.key for r in dask_scheduler.transitions(start="processing", finish="memory")]
    return len(keys), len(set(keys))


def finished_runs_after(since: float, dask_scheduler: Any = None) -> tuple[int, float]:
    """(runs that ended in memory after the scheduler's clock read ``since``, the clock now),
    from the scheduler's own transition log: successive calls count every run exactly once."""
    now = time.time()
    if hasattr(dask_scheduler, "transition_log"):
        times = [
            t.timestamp
            for t in dask_scheduler.transition_log
            if t.start == "processing" and t.finish == "memory"
        ]
    else:
        records = dask_scheduler.transitions(start="processing", finish="memory", since=since)
        times = [r.timestamp for r in records]
    return sum(since < stamp <= now for stamp in times), now


def worker_pids(dask_scheduler: Any = None) -> list[int]:
    """The process ids of the workers the scheduler has now (both keep ``.pid`` per worker)."""
    return sorted(w.pid for w in dask_scheduler.workers.values() if w.pid)


def scheduler_rss() -> int:
    """Resident memory of the process hosting the scheduler, after a full collection."""
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss


# --- backends ---------------------------------------------------------------------------------


class Backend:
    """The handful of operations the task workloads need, over one system's native API."""

    name: str

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def result(self, handle: Any) -> Any:
        raise NotImplementedError

    def map(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return [self.submit(fn, item) for item in items]

    def gather(self, handles: list[Any]) -> list[Any]:
        return [self.result(handle) for handle in handles]

    def versions(self) -> dict[str, str]:
        return {}


class FuturesBackend(Backend):
    """storied or dask.distributed: both speak the same Client/Future API."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.module_name = SYSTEM_MODULES[name]
        self.client = client

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args)

    def result(self, handle: Any) -> Any:
        return handle.result()

    def map(self, fn: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        return self.client.map(fn, items)

    def gather(self, handles: list[Any]) -> list[Any]:
        return self.client.gather(handles)

    def versions(self) -> dict[str, str]:
        if self.name == "dask":
            import dask
            import distributed

            return {"dask": dask.__version__, "distributed": distributed.__version__}
        from importlib.metadata import version

        return {"storied": version("storied")}


class PoolBackend(Backend):
    name = "pool"

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    def result(self, handle: Any) -> Any:
        return handle.result()


class RayBackend(Backend):
    name = "ray"

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self._remotes: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in self._remotes:
            self._remotes[fn] = self.ray.remote(fn)
        return self._remotes[fn].remote(*args)

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def gather(self, handles: list[Any]) -> list[Any]:
        return self.ray.get(handles)

    def versions(self) -> dict[str, str]:
        return {"ray": self.ray.__version__}


@contextmanager
def open_backend(
    system: str, dask_config: dict[str, Any], n_workers: int = N_WORKERS
) -> Iterator[Backend]:
    """Start ``system`` with the common cluster shape (2 worker processes x 1 thread, unless
    the workload asks for more workers), warmed up."""
    if system in FUTURES_SYSTEMS:
        backend_cm = _futures_backend(system, dask_config, n_workers)
    elif system == "pool":
        backend_cm = _pool_backend()
    elif system == "ray":
        backend_cm = _ray_backend()
    elif system == RAW_TCP:
        backend_cm = nullcontext(Backend())
    else:
        raise ValueError(f"unknown system {system!r}; expected one of {sorted(ALL_SYSTEMS)}")
    with backend_cm as backend:
        if system != RAW_TCP:
            backend.gather(backend.map(inc, range(-4 * N_WORKERS, 0)))
        yield backend


@contextmanager
def _futures_backend(system: str, dask_config: dict[str, Any], n_workers: int) -> Iterator[Backend]:
    module = importlib.import_module(SYSTEM_MODULES[system])
    logging.getLogger(module.__name__).setLevel(logging.ERROR)
    cluster_kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": THREADS_PER_WORKER,
        "processes": True,
        "dashboard_address": None,
    }
    if system == "dask":
        import dask

        cluster_kwargs["silence_logs"] = logging.ERROR
        config_cm: Any = dask.config.set(dask_config)
    else:
        config_cm = nullcontext()
    with (
        config_cm,
        module.LocalCluster(**cluster_kwargs) as cluster,
        module.Client(cluster) as client,
    ):
        yield FuturesBackend(system, client)


@contextmanager
def _pool_backend() -> Iterator[Backend]:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=N_WORKERS * THREADS_PER_WORKER) as pool:
        yield PoolBackend(pool)


@contextmanager
def _ray_backend() -> Iterator[Backend]:
    import ray

    ray.init(
        num_cpus=N_WORKERS * THREADS_PER_WORKER,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        yield RayBackend(ray)
    finally:
        ray.shutdown()


# --- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Workload:
    name: str
    default_size: int
    full_size: int
    size_unit: str
    metrics: tuple[Metric, ...]
    systems: frozenset[str]
    run: Callable[[Any, int], dict[str, float]]
    dask_config: dict[str, Any] = field(default_factory=dict)
    #: environment variables storied reads its config from, set before it is imported
    storied_environment: dict[str, str] = field(default_factory=dict)
    n_workers: int = N_WORKERS
    #: run by ``bench/run`` when no workloads are named (the long ones are not)
    by_default: bool = True


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and the live processes it started (the workers).

    Less at the mercy of a noisy shared machine than wall time: it shows what a system spends
    per task even when a neighbour steals a core in the middle of a run.
    """
    return sum(cpu_seconds_apart())


def cpu_seconds_apart() -> tuple[float, float]:
    """``cpu_seconds`` in two: this process's (client, and a LocalCluster's scheduler), and
    its live descendants' (workers, nannies)."""
    import psutil

    me = psutil.Process()
    times = me.cpu_times()
    descendants = 0.0
    for process in me.children(recursive=True):
        try:
            child = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        descendants += child.user + child.system
    return times.user + times.system, descendants


def per_task(task_count: int, started: float, started_cpu: float) -> dict[str, float]:
    return {
        "tasks": task_count,
        "tasks_per_s": task_count / (time.perf_counter() - started),
        "cpu_us_per_task": (cpu_seconds() - started_cpu) / task_count * 1e6,
    }


def run_map(backend: Backend, size: int) -> dict[str, float]:
    started, started_cpu = time.perf_counter(), cpu_seconds()
    backend.gather(backend.map(noop, range(size)))
    return per_task(size, started, started_cpu)


def submit_tree(
    backend: Backend,
    leaves: int,
    leaf: Callable[[int], int],
    combine: Callable[[int, int], int],
    first: int = 0,
) -> tuple[Any, int]:
    """Submit ``leaf(i)`` for ``leaves`` leaves numbered from ``first``, combined pairwise up to
    one root; (the root's handle, the number of tasks)."""
    level = backend.map(leaf, range(first, first + leaves))
    task_count = len(level)
    while len(level) > 1:
        pairs = [
            backend.submit(combine, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        task_count += len(pairs)
        level = pairs + level[len(pairs) * 2 :]
    return level[0], task_count


def run_tree(backend: Backend, leaves: int) -> dict[str, float]:
    """Sum inc(i) over ``leaves`` leaf tasks pairwise, one level of futures at a time."""
    started, started_cpu = time.perf_counter(), cpu_seconds()
    root, task_count = submit_tree(backend, leaves, inc, add)
    total = backend.result(root)
    measured = per_task(task_count, started, started_cpu)
    expected = leaves * (leaves + 1) // 2
    if total != expected:
        raise RuntimeError(f"tree reduced to {total}, expected {expected}")
    return measured


def run_churn(backend: FuturesBackend, leaves: int) -> dict[str, float]:
    """The tree of ``run_tree`` with tasks of ``CHURN_TASK_S``, while one worker process is
    SIGKILLed every ``CHURN_KILL_INTERVAL_S`` (its nanny starts another) for the whole run:
    completion time, kills, and results computed more than once (by the scheduler's record)."""
    client = backend.client
    killer = _Killer(client)
    started, started_cpu = time.perf_counter(), cpu_seconds()
    killer.start()
    try:
        root, task_count = submit_tree(backend, leaves, slow_inc, slow_add)
        total = backend.result(root)
    finally:
        killer.stop.set()
        killer.join()
    measured = per_task(task_count, started, started_cpu)
    expected = leaves * (leaves + 1) // 2
    if total != expected:
        raise RuntimeError(f"tree reduced to {total}, expected {expected}")
    runs, distinct = client.run_on_scheduler(finished_runs)  # the warm-up tasks included
    return {
        **measured,
        "seconds": time.perf_counter() - started,
        "kills": killer.kills,
        "replaced": killer.replaced(),
        "recomputed": runs - distinct,
    }


def run_churn_stream(backend: FuturesBackend, leaves: int) -> dict[str, float]:
    """Throughput under churn: reduction trees of ``leaves`` cheap leaves (no sleep), one after
    another for ``CHURN_STREAM_S``, while one worker process is SIGKILLed every
    ``CHURN_KILL_INTERVAL_S`` (its nanny starts another). Every tree's sum is checked.

    The figures: correct tasks completed per second, from the start until the last tree
    finished (or until the tree still running ``CHURN_STREAM_GRACE_S`` after the stream's end
    is given up on, which then counts nothing: a system that hangs scores what it finished);
    and results computed more than once per kill, counted tree by tree from the scheduler's own
    record, so its log need only hold one tree's transitions, however long the run."""
    client = backend.client
    killer = _Killer(client)
    tasks = recomputed = trees = wasted = 0
    abandoned = False
    _, counted_until = client.run_on_scheduler(finished_runs_after, 0.0)  # after the warm-up
    started, started_cpu = time.perf_counter(), cpu_seconds()
    give_up_at = started + CHURN_STREAM_S + CHURN_STREAM_GRACE_S
    killer.start()
    try:
        while time.perf_counter() - started < CHURN_STREAM_S:
            first = trees * leaves  # leaves numbered on from the last tree's: all keys new
            root, task_count = submit_tree(backend, leaves, inc, add, first)
            try:
                total = root.result(timeout=max(give_up_at - time.perf_counter(), 0.0))
            except TimeoutError:
                abandoned = True
                runs, counted_until = client.run_on_scheduler(finished_runs_after, counted_until)
                wasted += runs
                break
            expected = leaves * first + leaves * (leaves + 1) // 2
            if total != expected:
                raise RuntimeError(f"tree {trees} reduced to {total}, expected {expected}")
            del root
            runs, counted_until = client.run_on_scheduler(finished_runs_after, counted_until)
            if runs < task_count:
                raise RuntimeError(
                    f"tree {trees}: {runs} runs on the record for {task_count} tasks: the "
                    "scheduler's transition log is too short to count recomputation"
                )
            tasks += task_count
            recomputed += runs - task_count
            trees += 1
    finally:
        killer.stop.set()
        killer.join()
    seconds = time.perf_counter() - started
    figures = {
        "tasks_per_s": 0.0,
        "runs_per_s": (tasks + recomputed + wasted) / seconds,
        "trees": trees,
        "abandoned": int(abandoned),
        "kills": killer.kills,
        "replaced": killer.replaced(),
        "wasted": wasted,
    }
    if tasks:  # recomputation is counted over finished trees: with none, it is not known
        figures |= per_task(tasks, started, started_cpu) | {
            "recomputed": recomputed,
            "recomputed_per_kill": recomputed / max(killer.kills, 1),
        }
    return figures


class _Killer(threading.Thread):
    """SIGKILLs one worker process, chosen at random, every ``CHURN_KILL_INTERVAL_S``; never one
    it killed before (a scheduler slow to notice a death still lists the dead worker, and a
    signal to a dead process that its nanny has not yet reaped would count as a kill)."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.kills = 0
        self.killed: set[int] = set()
        self.random = random.Random(15)
        #: every worker process the scheduler has had since the start
        self.pids_seen = set(client.run_on_scheduler(worker_pids))

    def replaced(self) -> int:
        """Worker processes that came up beside the first ones: the kills really happened and
        the nannies replaced the dead."""
        self.pids_seen.update(self.client.run_on_scheduler(worker_pids))
        return len(self.pids_seen) - CHURN_WORKERS

    def run(self) -> None:
        while not self.stop.wait(CHURN_KILL_INTERVAL_S):
            pids = self.client.run_on_scheduler(worker_pids)
            self.pids_seen.update(pids)
            alive = [pid for pid in pids if pid not in self.killed]
            if not alive:
                continue
            victim = self.random.choice(alive)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue  # it died meanwhile
            self.killed.add(victim)
            self.kills += 1


def run_roundtrip(backend: Backend, count: int) -> dict[str, float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        backend.result(backend.submit(inc, i))
        latencies.append(time.perf_counter() - started)
    return {
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
    }


def run_worker_events(backend: FuturesBackend, count: int) -> dict[str, float]:
    task_count = min(WORKER_EVENT_TASKS, count)
    started = time.perf_counter()
    futures = [
        backend.submit(log_event_range, backend.module_name, first, share)
        for first, share in split_range(count, task_count)
    ]
    elapsed, kept = wait_for_events(backend.client, count, task_count, started)
    backend.gather(futures)
    return {"events_per_s": count / elapsed, "kept": kept}


def run_client_events(backend: FuturesBackend, count: int) -> dict[str, float]:
    client = backend.client
    started = time.perf_counter()
    for i in range(count):
        client.log_event(EVENT_TOPIC, {"i": i})
    client.log_event(DONE_TOPIC, {"first": 0})
    elapsed, kept = wait_for_events(client, count, 1, started)
    return {"events_per_s": count / elapsed, "kept": kept}


def run_story(backend: FuturesBackend, count: int) -> dict[str, float]:
    futures = backend.map(noop, range(count))
    backend.gather(futures)
    keys = random.Random(0).sample([future.key for future in futures], min(STORY_LOOKUPS, count))
    timing = backend.client.run_on_scheduler(time_story_lookups, keys)
    if timing["shortest_story"] == 0:
        raise RuntimeError("a finished task has an empty story: the transition log is too short")
    return {"story_us": timing["median_s"] * 1e6}


def run_scheduler_memory(backend: FuturesBackend, count: int) -> dict[str, float]:
    client = backend.client
    baseline = client.run_on_scheduler(scheduler_rss)
    futures = backend.map(noop, range(count))
    backend.gather(futures)
    held = client.run_on_scheduler(scheduler_rss)
    del futures
    poll_until(lambda: client.run_on_scheduler(scheduler_task_count) == 0, "tasks released")
    released = client.run_on_scheduler(scheduler_rss)
    return {
        "held_bytes_per_task": (held - baseline) / count,
        "released_bytes_per_task": (released - baseline) / count,
    }


TRANSFER_REPEATS = 3
MANY_RESULTS = 1_000
MB = 10**6


def run_transfer(backend: Backend, megabytes: int) -> dict[str, float]:
    """MB/s moving one ``megabytes`` numpy array and one bytes object worker to worker, to
    the client (gather) and from it (scatter); and 1,000 results of 1 MB gathered at once.
    Each figure is the best of a few moves, timed from request to arrival."""
    nbytes = megabytes * MB
    if isinstance(backend, FuturesBackend):
        return _transfer(FuturesMover(backend.client), nbytes)
    if isinstance(backend, RayBackend):
        return _transfer(RayMover(backend), nbytes)
    copies = [raw_tcp_copy(nbytes) for _ in range(TRANSFER_REPEATS)]
    rate = max(rate for rate, _ in copies)
    cpu_ms = min(cpu for _, cpu in copies) * 1000 / (nbytes / (100 * MB))
    # the same copy stands for every column: each is one process handing bytes to another
    return {metric.name: rate for metric in TRANSFER_MB_S} | {
        metric.name: cpu_ms for metric in TRANSFER_CPU
    }


class FuturesMover:
    """Where the transfer workload's tasks run with a futures API: the producer on the first
    worker, the reader on the second."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.first, self.second = sorted(client.scheduler_info()["workers"])[:2]

    def on_first(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, workers=[self.first], pure=False)

    def on_second(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, workers=[self.second], pure=False)

    def result(self, handle: Any) -> Any:
        return handle.result()

    def scatter(self, value: Any) -> Any:
        return self.client.scatter(value, workers=[self.second])

    def gather(self, handles: list[Any]) -> list[Any]:
        return self.client.gather(handles)

    def map(self, fn: Callable[..., Any], items: list[Any]) -> list[Any]:
        return self.client.map(fn, items, pure=False)


class RayMover:
    """The same with Ray: tasks go where Ray puts them (every worker reads a large object
    from the node's shared-memory object store, read-only, whichever process made it), the
    driver gets results with ``ray.get`` and scatters with ``ray.put``."""

    def __init__(self, backend: RayBackend) -> None:
        self.backend = backend
        self.ray = backend.ray

    def on_first(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.backend.submit(fn, *args)

    on_second = on_first

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def scatter(self, value: Any) -> Any:
        return self.ray.put(value)

    def gather(self, handles: list[Any]) -> list[Any]:
        return self.ray.get(handles)

    def map(self, fn: Callable[..., Any], items: list[Any]) -> list[Any]:
        return self.backend.map(fn, items)


def _transfer(mover: FuturesMover | RayMover, nbytes: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for kind, make in (("array", make_array), ("bytes", make_bytes)):
        w2w, gather, scatter, w2w_cpu, gather_cpu, produce, touched = [], [], [], [], [], [], []
        for _ in range(TRANSFER_REPEATS):
            started = time.perf_counter()
            made = mover.on_first(make, nbytes)
            mover.result(mover.on_first(nbytes_of, made))
            produce.append(time.perf_counter() - started)
            started, started_cpu = time.perf_counter(), cpu_seconds()
            # nbytes_of costs nothing next to the move, so this times the transfer
            mover.result(mover.on_second(nbytes_of, made))
            w2w.append(time.perf_counter() - started)
            w2w_cpu.append(cpu_seconds() - started_cpu)
            if kind == "array":
                again = mover.on_first(make, nbytes)
                mover.result(mover.on_first(nbytes_of, again))
                started = time.perf_counter()
                mover.result(mover.on_second(touch_pages, again))
                touched.append(time.perf_counter() - started)
                del again
            started, started_cpu = time.perf_counter(), cpu_seconds()
            value = mover.result(made)
            gather.append(time.perf_counter() - started)
            gather_cpu.append(cpu_seconds() - started_cpu)
            del made
            started = time.perf_counter()
            scattered = mover.scatter(value)
            scatter.append(time.perf_counter() - started)
            del scattered, value
        metrics[f"w2w_{kind}_mb_s"] = nbytes / MB / min(w2w)
        if touched:
            metrics[f"w2w_{kind}_touched_mb_s"] = nbytes / MB / min(touched)
        metrics[f"produce_{kind}_ms"] = min(produce) * 1000 / (nbytes / (100 * MB))
        metrics[f"gather_{kind}_mb_s"] = nbytes / MB / min(gather)
        metrics[f"scatter_{kind}_mb_s"] = nbytes / MB / min(scatter)
        per_100mb = 1000 / (nbytes / (100 * MB))
        metrics[f"w2w_{kind}_cpu_ms"] = min(w2w_cpu) * per_100mb
        metrics[f"gather_{kind}_cpu_ms"] = min(gather_cpu) * per_100mb
    many = mover.map(make_array, [MB] * MANY_RESULTS)
    mover.gather(mover.map(nbytes_of, many))
    started = time.perf_counter()
    mover.gather(many)
    metrics["gather_1000x1mb_mb_s"] = MANY_RESULTS / (time.perf_counter() - started)
    return metrics


def raw_tcp_copy(nbytes: int) -> tuple[float, float]:
    """MB/s of a child process sending ``nbytes`` over loopback into fresh memory here, as
    any transfer of a new object must land (``recv_into`` a new buffer, no framing), and the
    CPU seconds both processes spent on it."""
    import socket
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = subprocess.Popen(
            [sys.executable, "-c", _RAW_SENDER, str(port), str(nbytes)],
            stdout=subprocess.PIPE,
        )
        connection, _ = server.accept()
        with connection:
            assert connection.recv(1) == b"r"  # the sender holds its data and is ready
            started, started_cpu = time.perf_counter(), time.process_time()
            connection.sendall(b"g")
            buffer = bytearray(nbytes)
            view = memoryview(buffer)
            received = 0
            while received < nbytes:
                received += connection.recv_into(view[received:])
            seconds = time.perf_counter() - started
            cpu = time.process_time() - started_cpu
        sender_cpu, _ = sender.communicate(timeout=60)
    return nbytes / MB / seconds, cpu + float(sender_cpu)


_RAW_SENDER = """
import socket, sys, time
port, nbytes = int(sys.argv[1]), int(sys.argv[2])
data = b"\\x01" * nbytes
with socket.create_connection(("127.0.0.1", port)) as sock:
    sock.sendall(b"r")
    sock.recv(1)
    started = time.process_time()
    sock.sendall(data)
    print(time.process_time() - started)
"""


def wait_for_events(client: Any, expected: int, markers: int, started: float) -> tuple[float, int]:
    """Seconds from ``started`` until the events are readable, and how many the system kept.

    Each sender logs a marker after its events, on the same connection, so once every marker is
    readable its events have arrived even where the system keeps fewer than were sent. Polling
    the small marker topic keeps the poll itself from loading the scheduler.
    """
    poll_until(lambda: len(client.get_events(DONE_TOPIC)) >= markers, "event markers")
    finished = time.perf_counter()
    kept = len(client.get_events(EVENT_TOPIC))
    stable_since = finished
    while kept < expected and time.perf_counter() - stable_since < SETTLE_S:
        time.sleep(POLL_INTERVAL_S)
        now_kept = len(client.get_events(EVENT_TOPIC))
        if now_kept != kept:
            kept, finished = now_kept, time.perf_counter()
            stable_since = finished
    return finished - started, kept


def poll_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {WAIT_DEADLINE_S:.0f} s")
        time.sleep(POLL_INTERVAL_S)


def split_range(count: int, parts: int) -> list[tuple[int, int]]:
    """(first, length) of ``parts`` contiguous slices covering range(count), sizes within one."""
    base, extra = divmod(count, parts)
    slices = []
    first = 0
    for part in range(parts):
        length = base + (part < extra)
        slices.append((first, length))
        first += length
    return slices


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


TASKS_PER_S = (
    Metric("tasks_per_s", "tasks/s", higher_is_better=True),
    Metric("cpu_us_per_task", "CPU us/task, all processes", higher_is_better=False),
    # storied-ledger only: the SQLite file once the cluster has closed, warm-up included
    Metric("ledger_bytes_per_task", "B/task on disk", higher_is_better=False),
)
EVENTS_PER_S = Metric("events_per_s", "events/s", higher_is_better=True)
KEPT = Metric("kept", "events", higher_is_better=True)


def run_dask_array(backend: Backend, chunks: int, chunk_side: int = 100) -> dict[str, float]:
    """``(x + x.T).sum()`` of a square random array cut into about ``chunks`` chunks."""
    import dask.array as da

    side = round(math.sqrt(chunks))
    x = da.random.random((side * chunk_side, side * chunk_side), chunks=chunk_side)
    total = (x + x.T).sum()
    return _compute_timed(total, lambda value: 0 < value < 2 * x.size)


def run_dask_array_large(backend: Backend, chunks: int) -> dict[str, float]:
    """``dask_array`` with chunks of 1,000x1,000 (8 MB): results above a shared-memory
    threshold of 1 MiB, some staying on their worker, some moving (the transposed blocks)."""
    return run_dask_array(backend, chunks, chunk_side=1_000)


def run_dask_bag(backend: Backend, partitions: int) -> dict[str, float]:
    """A bag pipeline: 1,000 elements per partition, mapped, filtered, reduced."""
    import dask.bag as db

    n = partitions * 1_000
    total = db.from_sequence(range(n), npartitions=partitions).map(inc).filter(is_even).sum()
    return _compute_timed(total, lambda value: value == (n // 2) * (n // 2 + 1))


def run_delayed(backend: Backend, leaves: int) -> dict[str, float]:
    """Dask's delayed tree summation: ``leaves`` inc calls added pairwise (2 x leaves tasks)."""
    import dask

    level = [dask.delayed(inc)(i) for i in range(leaves)]
    while len(level) > 1:
        pairs = [dask.delayed(add)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + level[len(pairs) * 2 :]
    return _compute_timed(level[0], lambda value: value == leaves * (leaves + 1) // 2)


def is_even(x: int) -> bool:
    return x % 2 == 0


def _compute_timed(collection: Any, check: Callable[[Any], bool]) -> dict[str, float]:
    """Time ``collection.compute()`` on the system's default client (graph built beforehand);
    tasks are those of dask's optimized graph, the same for every system."""
    import dask

    task_count = len(dask.base.collections_to_expr([collection]).optimize().__dask_graph__())
    started, started_cpu = time.perf_counter(), cpu_seconds()
    value = collection.compute()
    measured = per_task(task_count, started, started_cpu)
    if not check(value):
        raise RuntimeError(f"{type(collection).__name__} computed a wrong value: {value!r}")
    return measured


ROUNDTRIP_MS = (Metric("median_ms", "ms", False), Metric("p99_ms", "ms", False))
STORY_US = (Metric("story_us", "us/lookup", False),)
BYTES_PER_TASK = (
    Metric("held_bytes_per_task", "B/task", False),
    Metric("released_bytes_per_task", "B/task", False),
)
TRANSFER_MB_S = tuple(
    Metric(name, "MB/s", higher_is_better=True)
    for name in (
        "w2w_array_mb_s",
        "w2w_array_touched_mb_s",
        "w2w_bytes_mb_s",
        "gather_array_mb_s",
        "gather_bytes_mb_s",
        "scatter_array_mb_s",
        "scatter_bytes_mb_s",
        "gather_1000x1mb_mb_s",
    )
)
CHURN = (
    Metric("seconds", "s", False),
    Metric("recomputed", "tasks", False),
    Metric("kills", "kills", True),
    Metric("replaced", "workers replaced", True),
)
CHURN_STREAM = (
    Metric("tasks_per_s", "correct tasks/s", higher_is_better=True),
    # every task run that ended in memory, the wasted ones too: how busy the scheduler kept
    # the workers, whatever came of it
    Metric("runs_per_s", "runs/s", higher_is_better=True),
    Metric("recomputed_per_kill", "recomputed tasks/kill", higher_is_better=False),
    Metric("kills", "kills", True),
    Metric("replaced", "workers replaced", True),
    Metric("trees", "trees", True),
    Metric("abandoned", "trees given up on", False),
    # runs of the tree given up on: whether a system was working all along or stuck
    Metric("wasted", "tasks run for nothing", False),
    Metric("cpu_us_per_task", "CPU us/task, all processes", higher_is_better=False),
)
#: CPU of every process (client, scheduler, workers) per 100 MB moved: less at the mercy of a
#: busy machine than MB/s
TRANSFER_CPU = tuple(
    Metric(name, "CPU ms per 100 MB, all processes", higher_is_better=False)
    for name in (
        "w2w_array_cpu_ms",
        "w2w_bytes_cpu_ms",
        "gather_array_cpu_ms",
        "gather_bytes_cpu_ms",
    )
)
#: from submitting the task making a result to knowing it is done, per 100 MB (what putting
#: results in shared memory adds to the task that makes them)
TRANSFER_PRODUCE = tuple(
    Metric(name, "ms per 100 MB, made on a worker", higher_is_better=False)
    for name in ("produce_array_ms", "produce_bytes_ms")
)
# Older distributed names the scheduler's transition log length the first way; the current one
# sizes it (and every event topic) with the second.
LONG_TRANSITION_LOG = {
    "distributed.scheduler.transition-log-length": 1_000_000,
    "distributed.admin.low-level-log-length": 1_000_000,
}
#: the same for storied: a long churn run overflows the default 100,000 transitions, and
#: recomputation that fell out of the log would go uncounted
LONG_STORIED_TRANSITION_LOG = {"STORIED_SCHEDULER__TRANSITION_LOG_LENGTH": "1000000"}

# Sizes: (default, full). Defaults keep `make bench` near ten minutes on a 2-core machine, where
# dask.distributed runs about 500 tasks/s; --full runs the sizes of the benchmark's design.
WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload("map", 3_000, 10_000, "tasks", TASKS_PER_S, ALL_SYSTEMS, run_map),
        Workload("tree", 1_024, 4_096, "leaves", TASKS_PER_S, TASK_SYSTEMS, run_tree),
        Workload("roundtrip", 300, 300, "calls", ROUNDTRIP_MS, ALL_SYSTEMS, run_roundtrip),
        Workload(
            "worker_events",
            50_000,
            50_000,
            "events",
            (EVENTS_PER_S, KEPT),
            FUTURES_SYSTEMS,
            run_worker_events,
        ),
        Workload(
            "client_events",
            10_000,
            20_000,
            "events",
            (EVENTS_PER_S, KEPT),
            FUTURES_SYSTEMS,
            run_client_events,
        ),
        Workload(
            "story",
            5_000,
            20_000,
            "tasks",
            STORY_US,
            FUTURES_SYSTEMS,
            run_story,
            dask_config=LONG_TRANSITION_LOG,
        ),
        Workload(
            "transfer",
            100,
            100,
            "MB",
            TRANSFER_MB_S + TRANSFER_CPU + TRANSFER_PRODUCE,
            frozenset({"storied", WITH_SHM, TCP_ONLY, "dask", RAW_TCP, "ray"}),
            run_transfer,
        ),
        Workload(
            "scheduler_memory",
            10_000,
            50_000,
            "tasks",
            BYTES_PER_TASK,
            FUTURES_SYSTEMS,
            run_scheduler_memory,
        ),
        Workload(
            "dask_array", 1_024, 1_024, "chunks", TASKS_PER_S, FUTURES_SYSTEMS, run_dask_array
        ),
        Workload(
            "dask_array_large",
            16,
            64,
            "chunks",
            TASKS_PER_S,
            FUTURES_SYSTEMS,
            run_dask_array_large,
            by_default=False,
        ),
        Workload("dask_bag", 100, 400, "partitions", TASKS_PER_S, FUTURES_SYSTEMS, run_dask_bag),
        Workload("delayed", 2_000, 5_000, "leaves", TASKS_PER_S, FUTURES_SYSTEMS, run_delayed),
        Workload(
            "churn",
            2_500,
            2_500,
            "leaves",
            CHURN,
            frozenset({"storied", "dask"}),
            run_churn,
            dask_config=LONG_TRANSITION_LOG,
            storied_environment=LONG_STORIED_TRANSITION_LOG,
            n_workers=CHURN_WORKERS,
            by_default=False,
        ),
        Workload(
            "churn_stream",
            2_500,
            2_500,
            "leaves per tree",
            CHURN_STREAM,
            frozenset({"storied", "dask"}),
            run_churn_stream,
            dask_config=LONG_TRANSITION_LOG,
            n_workers=CHURN_WORKERS,
            by_default=False,
        ),
    )
}


def measure(system: str, workload_name: str, size: int) -> dict[str, Any]:
    workload = WORKLOADS[workload_name]
    if system not in workload.systems:
        raise ValueError(f"{system} has no {workload_name} workload")
    with open_backend(system, workload.dask_config, workload.n_workers) as backend:
        metrics = workload.run(backend, size)
        versions = {"python": platform.python_version(), **backend.versions()}
    return {
        "system": system,
        "workload": workload_name,
        "size": size,
        "metrics": metrics,
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", required=True, choices=sorted(ALL_SYSTEMS))
    parser.add_argument("--workload", required=True, choices=list(WORKLOADS))
    parser.add_argument("--size", type=int, help="defaults to the workload's own size")
    args = parser.parse_args(argv)
    if args.system in FUTURES_SYSTEMS - {"dask"}:
        os.environ.update(WORKLOADS[args.workload].storied_environment)
    if args.system == NO_RECORD:
        os.environ.update(NO_RECORD_ENVIRONMENT)  # read when storied is imported
    if args.system == NO_TELEMETRY:
        os.environ.update(NO_TELEMETRY_ENVIRONMENT)
    if args.system == NO_QUEUE:
        os.environ.update(NO_QUEUE_ENVIRONMENT)
    if args.system == WITH_SHM:
        os.environ.update(WITH_SHM_ENVIRONMENT)
    if args.system == TCP_ONLY:
        os.environ.update(TCP_ONLY_ENVIRONMENT)
    ledger_dir = tempfile.TemporaryDirectory() if args.system == WITH_LEDGER else None
    if ledger_dir is not None:
        os.environ["STORIED_SCHEDULER__LEDGER"] = os.path.join(ledger_dir.name, "ledger.db")
    size = args.size or WORKLOADS[args.workload].default_size
    try:
        result = measure(args.system, args.workload, size)
    except Exception as error:
        traceback.print_exc()
        error_text = f"{type(error).__name__}: {error}"
        result = {
            "system": args.system,
            "workload": args.workload,
            "size": size,
            "error": error_text,
        }
        print(json.dumps(result), flush=True)
        return 1
    if ledger_dir is not None and "tasks" in result["metrics"]:
        on_disk = sum(path.stat().st_size for path in Path(ledger_dir.name).iterdir())
        result["metrics"]["ledger_bytes_per_task"] = on_disk / result["metrics"]["tasks"]
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
