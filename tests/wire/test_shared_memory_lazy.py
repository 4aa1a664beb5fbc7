"""Shared memory written lazily: a result is reported done while held in the worker's private
memory and moved into segments only when the first same-host reader asks for it (a result
that never moves costs no copy); later readers map the same segments; a result released
before any read never gets one; a worker whose segments would not fit keeps its results
private."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config, wait
from storied.protocol.serialize import dumps_data
from storied.shm import segments
from storied.shm.writer import CHUNK, SegmentWrite
from tests.wire.shm_helpers import (
    MB,
    checksum,
    held_segments_of,
    make_array,
    pooled_segments_of,
    segments_of,
    two_worker_cluster,
    two_workers,
)

pytestmark = pytest.mark.skipif(segments.host_id() is None, reason="no /dev/shm here")


def shared_state(dask_worker: Any) -> dict[str, Any]:
    shared = dask_worker.shared
    return {
        "held": shared.held_bytes,
        "writing": shared.writing,
        "keys": shared.keys,
        "pooled": shared.pool.nbytes,
    }


def held_keys(dask_worker: Any) -> list[str]:
    return list(dask_worker.data)


def transfer_events(client: Client, action: str, key: str) -> list[tuple[float, dict[str, Any]]]:
    return [
        (time, msg)
        for time, msg in client.get_events("transfer")
        if msg.get("action") == action and (msg.get("key") == key or key in msg.get("keys", ()))
    ]


@pytest.fixture(scope="module")
def shm_client() -> Iterator[Client]:
    with two_worker_cluster(shared_memory=True) as cluster, Client(cluster) as client:
        yield client


def test_a_finished_result_gets_a_segment_only_when_a_same_host_reader_asks(shm_client):
    """Made and not moved: no copy. The first reader (a peer) has it written and maps it; the
    second (the client's gather) maps the same segment."""
    (first, first_pid), (second, _) = two_workers(shm_client)
    before = set(held_segments_of(first_pid))
    made = shm_client.submit(make_array, 50 * MB, workers=[first], pure=False)
    wait(made, timeout=60)
    # the worker's event loop answers in order: after this, any write would have begun
    assert made.key not in shm_client.run(shared_state, workers=[first])[first]["keys"]
    assert set(held_segments_of(first_pid)) == before, "nothing is written before anyone asks"
    assert not transfer_events(shm_client, "shared", made.key)

    moved = shm_client.submit(checksum, made, workers=[second], pure=False)

    assert moved.result(timeout=60) == checksum(make_array(50 * MB))
    [(_, fetched)] = poll(
        lambda: transfer_events(shm_client, "fetched", made.key), what="the transfer event"
    )
    assert fetched["path"] == "shm" and fetched["from"] == first
    [(written_at, shared)] = transfer_events(shm_client, "shared", made.key)
    assert shared["nbytes"] == 50 * MB
    [done] = [
        entry
        for entry in shm_client.story(made.key)
        if entry.where == first and entry.finish == "memory"
    ]
    assert written_at >= done.timestamp
    [segment] = set(held_segments_of(first_pid)) - before

    assert checksum(made.result(timeout=60)) == checksum(make_array(50 * MB))
    assert set(held_segments_of(first_pid)) - before == {segment}, "the gather mapped it"
    assert len(transfer_events(shm_client, "shared", made.key)) == 1, "written once"


def test_the_worker_then_holds_the_result_in_its_segments_only(shm_client):
    (first, _), _ = two_workers(shm_client)
    made = shm_client.submit(make_array, 50 * MB, workers=[first], pure=False)
    made.result(timeout=60)  # the client's gather on this host has it written

    def backed_by_a_segment(key: str, dask_worker: Any) -> bool:
        """The array held is a view of a mapping, not the task's private array."""
        base = dask_worker.data[key]
        while getattr(base, "base", None) is not None:
            base = base.base
        return not isinstance(base, np.ndarray)

    assert poll(
        lambda: shm_client.run(backed_by_a_segment, made.key, workers=[first])[first],
        what="the private copy swapped for the segment",
    )
    assert shm_client.submit(checksum, made, workers=[first]).result(timeout=30) == checksum(
        make_array(50 * MB)
    )


def test_results_released_before_any_read_never_get_a_segment(shm_client):
    (first, first_pid), _ = two_workers(shm_client)
    # Earlier tests' results may still be going back to the pool: start once they are.
    poll(
        lambda: (
            not shm_client.run(held_keys, workers=[first])[first]
            and not shm_client.run(shared_state, workers=[first])[first]["keys"]
        ),
        what="the earlier results released",
    )
    before = set(held_segments_of(first_pid)) | set(pooled_segments_of(first_pid))
    made = [
        shm_client.submit(make_array, 30 * MB + i, workers=[first], pure=False) for i in range(3)
    ]
    wait(made, timeout=60)
    keys = {future.key for future in made}
    del made

    poll(
        lambda: not keys & set(shm_client.run(held_keys, workers=[first])[first]),
        what="the keys released",
    )
    assert set(segments_of(first_pid)) <= before, "no segment made, none pooled"
    assert not [msg for _, msg in shm_client.get_events("transfer") if msg.get("key") in keys], (
        "nothing written, nothing on the record"
    )


def test_a_result_that_was_never_written_is_shared_when_a_same_host_reader_asks(shm_client):
    """Scattered data does not go through a task: its first same-host reader has it written
    (one copy), and later readers map the same segments."""
    (first, first_pid), (second, _) = two_workers(shm_client)
    before = set(held_segments_of(first_pid))
    [scattered] = shm_client.scatter([make_array(20 * MB)], workers=[first])
    assert set(held_segments_of(first_pid)) == before, "nothing is written before anyone asks"

    moved = shm_client.submit(checksum, scattered, workers=[second], pure=False)

    assert moved.result(timeout=30) == checksum(make_array(20 * MB))
    assert transfer_events(shm_client, "shared", scattered.key)
    [(_, fetched)] = poll(
        lambda: transfer_events(shm_client, "fetched", scattered.key), what="transfer event"
    )
    assert fetched["path"] == "shm"
    written = set(held_segments_of(first_pid)) - before
    assert written
    assert checksum(scattered.result(timeout=30)) == checksum(make_array(20 * MB))
    assert set(held_segments_of(first_pid)) - before == written, "the gather mapped the same ones"


@pytest.mark.parametrize("mode", [True, "auto"])
def test_a_result_over_the_shared_memory_limit_stays_private_with_one_warning(mode):
    """As a small /dev/shm (64 MiB in Docker) would: the configured cap stands in for it."""
    settings = {"worker.shared-memory": mode, "worker.shared-memory-limit": "30MB"}
    with (
        config.set(settings),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        (first, first_pid), (second, _) = two_workers(client)
        fits = client.submit(make_array, 20 * MB, workers=[first], pure=False)
        too_big = [
            client.submit(make_array, 40 * MB + i, workers=[first], pure=False) for i in range(2)
        ]
        moved = client.map(checksum, [fits, *too_big], workers=[second], pure=False)

        assert client.gather(moved) == [
            checksum(make_array(n)) for n in (20 * MB, 40 * MB, 40 * MB + 1)
        ]
        paths = {
            key: poll(lambda key=key: transfer_events(client, "fetched", key), what="fetched")
            for key in (fits.key, too_big[0].key)
        }
        assert paths[fits.key][0][1]["path"] == "shm"
        assert paths[too_big[0].key][0][1]["path"] == "tcp"
        kept = [msg for _, msg in client.get_events("transfer") if msg["action"] == "kept-private"]
        assert {msg["key"] for msg in kept} == {future.key for future in too_big}
        assert "worker.shared-memory-limit" in kept[0]["reason"]
        held = client.run(shared_state, workers=[first])[first]
        assert held["held"] <= 30 * MB and len(segments_of(first_pid)) == 1
        warnings = [
            message
            for level, message in client.get_worker_logs(workers=[first])[first]
            if level == "WARNING" and "stays out of shared memory" in message
        ]
        assert len(warnings) == 1, warnings


def _planned_write(value: np.ndarray) -> SegmentWrite:
    pickled = dumps_data(value)
    write = SegmentWrite("some-key", value)
    large = {index: memoryview(buffer) for index, buffer in enumerate(pickled.buffers)}
    assert write.prepare(lambda _: (pickled, large))
    return write


def test_a_reader_finishes_a_write_whose_chunk_a_stalled_reader_holds():
    """Another reader's thread took a chunk and the kernel keeps it off the CPU: this reader
    writes that chunk too (the same bytes) instead of waiting for it."""
    value = np.arange(3 * CHUNK + 5, dtype="u1")
    write = _planned_write(value)
    try:
        assert write._claim() == 0  # taken by the stalled thread, never written

        assert write.run(), "the reader wrote the last chunk"
        [(index, name)] = write.names.items()
        mapped = segments.map_segment(name, write.sizes[index])
        assert bytes(mapped) == value.tobytes()
    finally:
        segments.unlink(list(write.names.values()))


def test_a_write_cancelled_before_it_starts_creates_no_segment():
    write = _planned_write(np.ones(2 * CHUNK, dtype="u1"))
    names = list(write.names.values())

    assert write.cancel() == [], "nothing was created"

    assert not write.run() and write.finished.is_set()
    assert not set(names) & set(os.listdir(segments.DIRECTORY))
