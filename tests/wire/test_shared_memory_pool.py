"""The pool of segments a worker keeps from released results: the next result is copied into
one (the same file, its pages in memory already), never while another process still maps
it; the pool stays within ``worker.shared-memory-pool``; close, a crash and memory pressure
leave nothing of it in /dev/shm."""

from __future__ import annotations

import contextlib
import gc
import mmap
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config
from storied.shm import pool, segments
from tests.wire.shm_helpers import (
    MB,
    checksum,
    held_segments_of,
    make_array,
    pooled_segments_of,
    segments_of,
    two_workers,
)

pytestmark = pytest.mark.skipif(
    segments.host_id() is None or not pool.leases_work(), reason="no /dev/shm or leases here"
)

POOL_BOUND = 30 * MB


def scribble_then_checksum(array: np.ndarray) -> int:
    array[:] = 7
    return checksum(array)


def pool_state(dask_worker: Any) -> dict[str, int]:
    return {"bytes": dask_worker.shared.pool.nbytes, "segments": len(dask_worker.shared.pool)}


def inodes(names: list[str]) -> set[int]:
    found = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            found.add(os.stat(os.path.join(segments.DIRECTORY, name)).st_ino)
    return found


def shared_events(client: Client, key: str) -> list[dict[str, Any]]:
    return [
        msg
        for _, msg in client.get_events("transfer")
        if msg.get("action") == "shared" and msg.get("key") == key
    ]


def make_and_share(client: Client, worker: str, nbytes: int) -> Any:
    """A result made on ``worker`` and written into its segments (the ``shared`` event)."""
    future = client.submit(make_array, nbytes, workers=[worker], pure=False)
    future.result(timeout=30)
    poll(lambda: shared_events(client, future.key), timeout=30, what="written into segments")
    return future


def wait_pooled(client: Client, worker: str, count: int) -> None:
    poll(
        lambda: client.run(pool_state, workers=[worker])[worker]["segments"] >= count,
        timeout=15,
        what=f"{count} segments pooled",
    )


@pytest.fixture(scope="module")
def pool_cluster() -> Iterator[LocalCluster]:
    settings = {"worker.shared-memory": True, "worker.shared-memory-pool": POOL_BOUND}
    with (
        config.set(settings),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster,
    ):
        yield cluster


@pytest.fixture
def client(pool_cluster: LocalCluster) -> Iterator[Client]:
    with Client(pool_cluster) as client:
        yield client
        # each test starts with nothing held or pooled
        poll(
            lambda: not any(client.run(lambda dask_worker: dask_worker.shared.keys).values()),
            timeout=15,
            what="every result released",
        )
        client.run(lambda dask_worker: dask_worker.shared.pool.drain())


def test_a_released_results_segment_is_reused_by_the_next_result(client):
    (first, first_pid), (second, _) = two_workers(client)
    made = make_and_share(client, first, 8 * MB)
    [name] = held_segments_of(first_pid)
    inode = inodes([name])

    del made
    wait_pooled(client, first, 1)
    assert not held_segments_of(first_pid) and len(pooled_segments_of(first_pid)) == 1

    again = make_and_share(client, first, 8 * MB - 3)  # a little smaller: cut to size

    [reused] = held_segments_of(first_pid)
    assert inodes([reused]) == inode, "the same file"
    assert os.stat(os.path.join(segments.DIRECTORY, reused)).st_size == 8 * MB - 3
    assert not pooled_segments_of(first_pid)
    [event] = shared_events(client, again.key)
    assert event["reused"] == event["nbytes"] == 8 * MB - 3
    moved = client.submit(checksum, again, workers=[second], pure=False)
    assert moved.result(timeout=30) == checksum(make_array(8 * MB - 3))


def remember_pooled_mapping(dask_worker: Any) -> bool:
    [segment] = dask_worker.shared.pool._segments
    dask_worker.remembered_mapping = segment.mapping
    return segment.mapping is not None


def pooled_mapping_is_the_remembered_one(dask_worker: Any) -> bool:
    [segment] = dask_worker.shared.pool._segments
    return segment.mapping is dask_worker.__dict__.pop("remembered_mapping")


def test_a_reused_segment_goes_back_to_the_pool_with_its_write_mapping(client):
    """Mapping a pooled segment again and faulting it in costs about 9 ms per 100 MB: the
    mapping the next result was copied through comes back to the pool with the segment."""
    (first, _), (second, _) = two_workers(client)
    made = make_and_share(client, first, 8 * MB)
    del made
    wait_pooled(client, first, 1)
    poll(
        lambda: client.run(remember_pooled_mapping, workers=[first])[first],
        timeout=15,
        what="the pooled segment mapped",
    )

    again = make_and_share(client, first, 8 * MB)
    [event] = shared_events(client, again.key)
    assert event["reused"] == 8 * MB
    moved = client.submit(checksum, again, workers=[second], pure=False)
    assert moved.result(timeout=30) == checksum(make_array(8 * MB))
    del again, moved
    wait_pooled(client, first, 1)

    assert client.run(pooled_mapping_is_the_remembered_one, workers=[first])[first]


def keep_write_mappings(most: int, dask_worker: Any) -> int:
    """Set how many write mappings the worker keeps; the number it held before."""
    from storied.shm import results

    before, results.MAX_SEGMENTS = results.MAX_SEGMENTS, most
    return before


def test_the_write_mappings_kept_are_bounded_as_the_pool_is(client):
    """Each kept mapping holds a descriptor: past the pool's number of segments, a result
    copied into a pooled segment lets its mapping go, as before, and the pool maps the segment
    again when it comes back."""
    (first, _), (second, _) = two_workers(client)
    made = [make_and_share(client, first, 4 * MB) for _ in range(2)]
    del made
    wait_pooled(client, first, 2)
    before = client.run(keep_write_mappings, 1, workers=[first])[first]
    try:
        again = [make_and_share(client, first, 4 * MB) for _ in range(2)]
        assert [e["reused"] for f in again for e in shared_events(client, f.key)] == [4 * MB] * 2
        kept = client.run(lambda dask_worker: len(dask_worker.shared._written), workers=[first])
        assert kept == {first: 1}
        checks = client.map(checksum, again, workers=[second], pure=False)
        assert client.gather(checks) == [checksum(make_array(4 * MB))] * 2
        del again, checks
        wait_pooled(client, first, 2)
    finally:
        client.run(keep_write_mappings, before, workers=[first])

    def mapped(dask_worker: Any) -> list[bool]:
        return [segment.mapping is not None for segment in dask_worker.shared.pool._segments]

    poll(lambda: client.run(mapped, workers=[first])[first] == [True, True], what="both mapped")


def test_a_segment_a_reader_still_maps_is_not_written_again(client):
    """The client holds a gathered result (mapped copy-on-write): its segment, released by
    the worker, must not take the next result, whose bytes the client would see."""
    (first, first_pid), _ = two_workers(client)
    made = make_and_share(client, first, 6 * MB)
    held = made.result(timeout=30)
    inode = inodes(held_segments_of(first_pid))
    del made
    wait_pooled(client, first, 1)

    other = client.submit(np.full, 6 * MB, 9, dtype="u1", workers=[first], pure=False)
    other.result(timeout=30)
    other_key = other.key
    poll(lambda: shared_events(client, other_key), timeout=30, what="written into segments")

    assert inodes(held_segments_of(first_pid)).isdisjoint(inode)
    [event] = shared_events(client, other_key)
    assert event["reused"] == 0
    assert checksum(held) == checksum(make_array(6 * MB)), "what the client holds is unchanged"

    del held, other
    gc.collect()
    wait_pooled(client, first, 2)
    third = make_and_share(client, first, 6 * MB)
    [event] = shared_events(client, third.key)
    assert event["reused"] == 6 * MB, "once the client let go, its segment is reused"


def test_a_reader_changing_a_reused_segment_changes_only_its_own_copy(client):
    (first, _), (second, _) = two_workers(client)
    del_me = make_and_share(client, first, 5 * MB)
    del del_me
    wait_pooled(client, first, 1)
    made = make_and_share(client, first, 5 * MB)
    assert shared_events(client, made.key)[0]["reused"] == 5 * MB

    scribbled = client.submit(scribble_then_checksum, made, workers=[second], pure=False)

    assert scribbled.result(timeout=30) == 7 * 5 * MB
    again = client.submit(checksum, made, workers=[second], pure=False)
    assert again.result(timeout=30) == checksum(make_array(5 * MB))
    assert checksum(made.result(timeout=30)) == checksum(make_array(5 * MB))


def test_the_pool_stays_within_its_bound(client):
    (first, first_pid), _ = two_workers(client)
    made = [make_and_share(client, first, 9 * MB + i) for i in range(5)]
    del made
    wait_pooled(client, first, 3)
    poll(lambda: not held_segments_of(first_pid), timeout=15, what="all released")

    state = client.run(pool_state, workers=[first])[first]
    assert state["segments"] == 3, "three of 9 MB fit in 30 MB, the others were unlinked"
    on_disk = sum(
        os.stat(os.path.join(segments.DIRECTORY, name)).st_size
        for name in pooled_segments_of(first_pid)
    )
    assert on_disk == state["bytes"] <= POOL_BOUND
    assert len(pooled_segments_of(first_pid)) == state["segments"] == 3


def test_the_pool_counts_in_the_workers_shared_memory_and_goes_first_under_pressure(client):
    (first, first_pid), _ = two_workers(client)
    made = make_and_share(client, first, 10 * MB)
    del made
    wait_pooled(client, first, 1)
    assert client.run(lambda dask_worker: dask_worker.shared.held_bytes, workers=[first]) == {
        first: 10 * MB
    }

    def under_pressure(dask_worker: Any) -> int:
        memory = dask_worker.memory
        limit, fractions = memory.limit, memory.fractions
        memory.limit, memory.fractions = 1, {"spill": None, "target": None, "pause": 0.5}
        try:
            memory.check()
        finally:
            memory.limit, memory.fractions = limit, fractions
            memory._set_paused(False, memory.usage())
        return dask_worker.shared.pool.nbytes

    assert client.run(under_pressure, workers=[first]) == {first: 0}
    assert not segments_of(first_pid)


def test_a_worker_killed_with_pooled_segments_leaves_none(client):
    (first, first_pid), _ = two_workers(client)
    made = make_and_share(client, first, 4 * MB)
    del made
    wait_pooled(client, first, 1)
    assert pooled_segments_of(first_pid)

    os.kill(first_pid, signal.SIGKILL)

    poll(lambda: not segments_of(first_pid), timeout=15, what="the nanny removed the segments")
    poll(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=30, what="restarted")


@contextlib.contextmanager
def one_worker_pooling(pool_bound: int) -> Iterator[tuple[Client, str, dict[str, Any]]]:
    """A client of a fresh one-worker cluster with shared memory on and this pool bound: the
    client, the worker's address and its info."""
    settings = {"worker.shared-memory": True, "worker.shared-memory-pool": pool_bound}
    with (
        config.set(settings),
        LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        [(address, info)] = client.scheduler_info()["workers"].items()
        yield client, address, info


def test_a_closed_worker_leaves_no_pooled_segment():
    with one_worker_pooling(POOL_BOUND) as (client, address, info):
        made = make_and_share(client, address, 4 * MB)
        del made
        wait_pooled(client, address, 1)
        assert pooled_segments_of(info["pid"])
        # and one held in a segment taken from the pool, with its write mapping
        again = make_and_share(client, address, 4 * MB)
        fresh = make_and_share(client, address, 4 * MB)
        assert [e["reused"] for e in shared_events(client, again.key)] == [4 * MB]
        assert [e["reused"] for e in shared_events(client, fresh.key)] == [0]
        assert len(held_segments_of(info["pid"])) == 2
    assert not segments_of(info["pid"])


def test_with_no_pool_a_released_result_is_unlinked():
    with one_worker_pooling(0) as (client, address, info):
        made = make_and_share(client, address, 4 * MB)
        assert held_segments_of(info["pid"])

        del made

        poll(lambda: not segments_of(info["pid"]), timeout=10, what="segments unlinked")


def segments_in_use_by(pid: int) -> set[str]:
    """The segments process ``pid`` has open or mapped, unlinked ones too."""
    used = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                used.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/maps") as maps:
        used.update(line.split(None, 5)[-1].strip() for line in maps if segments.PREFIX in line)
    return {
        os.path.basename(path.removesuffix(" (deleted)"))
        for path in used
        if os.path.basename(path).startswith(segments.PREFIX)
    }


def test_a_spilled_result_in_a_reused_segment_lets_go_of_its_write_mapping():
    """A result copied into a pooled segment keeps that segment's descriptor and mapping; a
    spill unlinks the segment and must close them too, or the worker would hold the memory."""
    settings = {
        "worker.shared-memory": True,
        "worker.shared-memory-pool": POOL_BOUND,
        "worker.memory.spill": False,
        "worker.memory.pause": False,
        "worker.memory.terminate": False,
    }
    with (
        config.set(settings),
        LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", memory_limit="50MB"
        ) as cluster,
        Client(cluster) as client,
    ):
        [(address, info)] = client.scheduler_info()["workers"].items()
        made = make_and_share(client, address, 20 * MB)
        del made
        wait_pooled(client, address, 1)
        again = make_and_share(client, address, 20 * MB)
        [event] = shared_events(client, again.key)
        assert event["reused"] == 20 * MB
        [segment] = held_segments_of(info["pid"])
        assert segment in segments_in_use_by(info["pid"])

        # past the target (60% of 50 MB), the least recently used result goes to disk
        later = client.map(make_array, [20 * MB, 20 * MB], pure=False)
        client.gather(client.map(checksum, later))

        poll(
            lambda: segment not in segments_in_use_by(info["pid"]),
            what="the spilled segment closed and unmapped",
        )
        assert segment not in segments_of(info["pid"])
        assert client.submit(checksum, again).result(timeout=30) == checksum(make_array(20 * MB))


def test_a_pooled_segment_is_taken_only_by_its_sole_holder(tmp_path):
    """The pool on its own: it takes a segment under a pool name, refuses it to a writer while
    another open file maps it, and gives it back whole once that mapping is gone."""
    name = segments.segment_name("pool-unit")
    segments.create_segment(name)
    path = os.path.join(segments.DIRECTORY, name)
    with open(path, "r+b") as file:
        file.write(b"a" * 3 * mmap.PAGESIZE)
    reader_fd = os.open(path, os.O_RDONLY)
    reader = mmap.mmap(reader_fd, 3 * mmap.PAGESIZE, access=mmap.ACCESS_COPY)
    os.close(reader_fd)
    segment_pool = pool.SegmentPool(10 * MB)
    try:
        [pooled] = segment_pool.give([(name, 3 * mmap.PAGESIZE)], {})
        assert not os.path.exists(path) and pooled.name.endswith("-pool")
        segment_pool.map(pooled)

        assert segment_pool.take(mmap.PAGESIZE, segments.segment_name("next")) is None
        assert segment_pool.take(4 * mmap.PAGESIZE, segments.segment_name("next")) is None

        reader.close()
        taken = segment_pool.take(mmap.PAGESIZE, segments.segment_name("next"))
        assert taken is not None and taken.mapping is not None
        assert os.stat(os.path.join(segments.DIRECTORY, taken.name)).st_size == mmap.PAGESIZE
        assert len(segment_pool) == 0 and segment_pool.nbytes == 0
        taken.close()
        segments.unlink([taken.name])
    finally:
        segment_pool.drain()
        segments.unlink([name])


def hold_a_write_lease(path: str, seconds: float) -> None:
    fd = os.open(path, os.O_RDWR)
    assert pool.take_write_lease(fd)
    time.sleep(seconds)


def test_a_process_opening_a_segment_under_lease_does_not_kill_its_holder():
    """Linux signals a lease holder when another process opens its file: SIGIO by default,
    which would kill a worker checking a pooled segment at that moment."""
    name = segments.segment_name("lease-holder")
    segments.create_segment(name)
    path = os.path.join(segments.DIRECTORY, name)
    holder = multiprocessing.get_context("spawn").Process(
        target=hold_a_write_lease, args=(path, 1.0)
    )
    try:
        holder.start()
        poll(lambda: leased(path), timeout=30, what="the lease taken")

        holder.join(timeout=30)

        assert holder.exitcode == 0
    finally:
        segments.unlink([name])


def leased(path: str) -> bool:
    """Whether opening ``path`` meets a lease (and so breaks it, signalling its holder)."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except BlockingIOError:
        return True
    return False
