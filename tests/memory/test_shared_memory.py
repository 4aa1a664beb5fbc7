"""Memory limits see shared memory: results a worker holds in /dev/shm segments (which its RSS
does not show) count towards spill, pause and the nanny's terminate."""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest
from engine.helpers import poll

from storied import Client, Future, KilledWorker, LocalCluster, Worker, config, wait
from storied.shm import accounting, segments
from tests.engine.helpers import write_segment

from .helpers import MB, budgeted_client, data_on_worker, memory_events

pytestmark = pytest.mark.skipif(segments.host_id() is None, reason="no /dev/shm here")

#: each result: large enough to go into a segment, small enough for a shared machine
ARRAY = 100 * MB


def make_array(seed: int) -> np.ndarray:
    return np.full(ARRAY, seed % 256, dtype="u1")


def held_in_segments(dask_worker: Worker) -> dict[str, int]:
    usage = dask_worker.memory.usage()
    return {
        "held": dask_worker.shared.held_bytes,
        "pooled": dask_worker.shared.pool.nbytes,
        "rss": usage.rss,
        "shm": usage.shm,
    }


def writes_under_way(dask_worker: Worker) -> int:
    return len(dask_worker.shared.writing)


def make_one_at_a_time(
    client: Client, count: int, stop: Callable[[], Any] = lambda: False
) -> list[Future]:
    """Results made one after the other, each gathered (or until ``stop()``): the client is on
    the worker's host, so its first read has the result written into shared memory, and what
    the worker holds is then segments, not private copies."""
    futures = []
    for seed in range(count):
        futures.append(client.submit(make_array, seed, pure=False))
        wait(futures[-1], timeout=60)
        if stop():
            break
        try:
            futures[-1].result(timeout=60)
        except KilledWorker:
            # the read had the result written while still held privately: both copies count,
            # and the nanny may restart the worker (then again as it remakes the results)
            if stop():
                break
            raise
        poll(
            lambda: stop() or not sum(client.run(writes_under_way).values()),
            timeout=60,
            what="the write done",
        )
        if stop():
            break
    return futures


def last_pause_if_paused(client: Client) -> dict[str, Any] | None:
    pauses = memory_events(client, "pause")
    return pauses[-1] if len(pauses) > len(memory_events(client, "unpause")) else None


def test_usage_counts_untouched_segment_bytes_once_and_touched_ones_in_rss_only():
    # shared memory this test process touched before (none, usually) hides as many bytes
    other = accounting.resident_shared_memory()
    name = segments.segment_name("accounting-test")
    write_segment(name, memoryview(b"\1" * (64 * 2**20)))
    try:
        process = psutil.Process()
        written = accounting.usage(process, 64 * 2**20)
        assert written.shm == 64 * 2**20 - other, "written with write(2): in no RSS, all shm"
        assert segments.bytes_of(os.getpid()) == 64 * 2**20
        assert accounting.usage_of(process).shm == written.shm, "the nanny's view agrees"

        mapped = segments.map_segment(name, 64 * 2**20)
        assert sum(mapped[i] for i in range(0, len(mapped), mmap.PAGESIZE)) == len(mapped) // (
            mmap.PAGESIZE
        )
        touched = accounting.usage(process, 64 * 2**20)
        assert touched.shm <= 2**20, "read pages are in RSS (RssShmem): not counted again"
        assert touched.rss >= written.rss + 63 * 2**20
        mapped[: 32 * 2**20] = b"\0" * (32 * 2**20)  # copied on write: private, no longer shmem
        copied = accounting.usage(process, 64 * 2**20)
        assert 31 * 2**20 - other <= copied.shm <= 33 * 2**20
        mapped.close()
    finally:
        segments.unlink([name])
    assert segments.bytes_of(os.getpid()) == 0


def test_results_in_shared_memory_make_the_worker_spill():
    # 600 MB limit: three 100 MB results stay under the target (360 MB) by size, and the
    # worker's RSS stays under the spill fraction (300 MB); with the segments they pass it
    with (
        config.set({"worker.shared-memory": True}),
        budgeted_client("600MB", target=0.6, spill=0.5) as client,
    ):
        futures = make_one_at_a_time(client, 3)

        def spill_report() -> dict[str, Any] | None:
            reports = [r for r in memory_events(client, "spill") if r["spilled-keys"]]
            return reports[0] if reports else None

        report = poll(spill_report, timeout=20, what="a spill past the fraction")
        assert report["shm"] > 0, "shared memory was counted"
        assert report["rss"] < 300 * MB, "the RSS alone would not have spilled"
        [held] = client.run(data_on_worker).values()
        assert held["spilled"] >= 1
        [shared] = client.run(held_in_segments).values()
        assert shared["held"] <= 200 * MB, "a spilled result's segments are let go"
        # not into the pool, which would keep the memory the spill was for (it did, now and
        # then, when the spill came after the pool was drained for it)
        assert shared["pooled"] == 0
        assert [int(f.result(timeout=30)[0]) for f in futures] == [0, 1, 2]


def test_results_in_shared_memory_pause_the_worker():
    with (
        config.set({"worker.shared-memory": True}),
        budgeted_client("600MB", pause=0.5) as client,
    ):
        futures = make_one_at_a_time(client, 3)
        # while a result is written both copies count: the worker may pause and resume before
        # all three are in segments, and then stays paused
        paused = poll(lambda: last_pause_if_paused(client), timeout=20, what="a pause")
        assert paused["shm"] >= 100 * MB
        assert paused["rss"] < 300 * MB, "the RSS alone would not have paused it"

        def sampled_shm() -> int:
            samples = [s for held in client.get_worker_metrics().values() for s in held]
            return max((s["shm_bytes"] or 0 for s in samples), default=0)

        poll(lambda: sampled_shm() >= 100 * MB, what="telemetry showing the shared memory")
        del futures
        poll(lambda: not last_pause_if_paused(client), timeout=20, what="unpause")
        unpaused = memory_events(client, "unpause")[-1]
        assert unpaused["rss"] + unpaused["shm"] < paused["rss"] + paused["shm"]


def test_the_nanny_kills_a_worker_whose_shared_memory_passes_terminate():
    # 500 MB limit, terminate at 95% (475 MB), the other thresholds off: nothing else steps in
    settings = {f"worker.memory.{name}": False for name in ("target", "spill", "pause")}
    with (
        config.set({"worker.shared-memory": True, "worker.memory.terminate": 0.95, **settings}),
        LocalCluster(
            n_workers=1, threads_per_worker=1, memory_limit="500MB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        [before] = client.scheduler_info()["workers"].values()
        futures = make_one_at_a_time(
            client, 5, stop=lambda: memory_events(client, "memory-restart")
        )
        [restart, *_] = poll(  # later ones: the restarted worker remakes the results
            lambda: memory_events(client, "memory-restart"), timeout=60, what="a memory restart"
        )
        assert restart["pid"] == before["pid"]
        assert restart["shm"] >= 200 * MB
        assert restart["rss"] < 475 * MB, "the RSS alone would not have passed terminate"
        assert "in shared memory" in restart["reason"]
        poll(lambda: not segments.bytes_of(before["pid"]), what="the dead worker's segments gone")
        del futures
