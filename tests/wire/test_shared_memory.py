"""Same host, no copy: large results handed between worker processes (and to the client)
through /dev/shm, copy-on-write, freed on release and after a crash, TCP as the fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config
from storied.shm import nontemporal, segments
from storied.shm.writer import CHUNK
from tests.engine.helpers import write_segment
from tests.wire.shm_helpers import (
    MB,
    checksum,
    held_segments_of,
    make_array,
    segments_of,
    start_environ,
    two_worker_cluster,
    two_workers,
)

pytestmark = pytest.mark.skipif(segments.host_id() is None, reason="no /dev/shm here")


def scribble_then_checksum(array: np.ndarray) -> int:
    """A task that modifies its input in place (allowed in Dask: it got its own copy)."""
    array[:] = 0
    return checksum(array)


def transfer_counters(dask_worker: Any) -> dict[str, int]:
    counters = dask_worker.transfers
    return {
        "shared_incoming_bytes": counters.shared_incoming_bytes,
        "shared_outgoing_bytes": counters.shared_outgoing_bytes,
    }


def in_segments(client: Client, worker: str, key: str) -> bool:
    """Whether ``worker`` holds ``key`` in shared memory (a same-host reader had it written)."""

    def held(dask_worker: Any) -> bool:
        return dask_worker.shared.handover(key) is not None

    return client.run(held, workers=[worker])[worker]


def wait_in_segments(client: Client, worker: str, key: str) -> None:
    poll(lambda: in_segments(client, worker, key), what=f"{key} written into shared memory")


def transfer_events(client: Client, key: str) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events("transfer") if key in msg.get("keys", ())]


@pytest.fixture(scope="module")
def shm_cluster() -> Iterator[LocalCluster]:
    with two_worker_cluster(shared_memory=True) as cluster:
        yield cluster


@pytest.fixture
def shm_client(shm_cluster: LocalCluster) -> Iterator[Client]:
    with Client(shm_cluster) as client:
        yield client


def test_an_array_moves_worker_to_worker_through_shared_memory(shm_client):
    (first, first_pid), (second, _) = two_workers(shm_client)
    before = shm_client.run(transfer_counters)
    made = shm_client.submit(make_array, 20 * MB, workers=[first], pure=False)
    made.result(timeout=30)  # gathered through shared memory: written by then at the latest
    assert segments_of(first_pid)

    moved = shm_client.submit(checksum, made, workers=[second], pure=False)

    assert moved.result(timeout=30) == checksum(make_array(20 * MB))
    [event] = poll(lambda: transfer_events(shm_client, made.key), what="transfer event")
    assert event["path"] == "shm" and event["from"] == first
    assert event["nbytes"] >= 20 * MB
    after = shm_client.run(transfer_counters)
    assert after[second]["shared_incoming_bytes"] - before[second]["shared_incoming_bytes"] >= (
        20 * MB
    )
    assert after[first]["shared_outgoing_bytes"] - before[first]["shared_outgoing_bytes"] >= (
        20 * MB
    )


def test_a_dependent_that_modifies_its_input_gets_its_own_copy(shm_client):
    (first, _), (second, _) = two_workers(shm_client)
    made = shm_client.submit(make_array, 5 * MB, workers=[first], pure=False)
    expected = checksum(make_array(5 * MB))
    gathered = made.result(timeout=30)

    scribbled = shm_client.submit(scribble_then_checksum, made, workers=[second], pure=False)

    assert scribbled.result(timeout=30) == 0
    assert shm_client.submit(checksum, made, workers=[first], pure=False).result() == expected
    assert checksum(gathered) == expected
    gathered[:] = 1  # the client's copy is writable and its own, too
    again = shm_client.submit(checksum, made, workers=[first], pure=False)
    assert again.result(timeout=30) == expected


def test_a_gather_to_the_client_maps_the_result(shm_client):
    (first, _), _ = two_workers(shm_client)
    made = shm_client.submit(make_array, 10 * MB, workers=[first], pure=False)
    made.result(timeout=30)
    before = shm_client.run(transfer_counters, workers=[first])[first]

    value = made.result(timeout=30)

    assert value.flags.writeable and checksum(value) == checksum(make_array(10 * MB))
    after = shm_client.run(transfer_counters, workers=[first])[first]
    assert after["shared_outgoing_bytes"] - before["shared_outgoing_bytes"] >= 10 * MB


def test_released_keys_free_their_segments(shm_client):
    """Freed for the key: renamed into the worker's pool (tests/wire/test_shared_memory_pool.py
    has it unlinked with the pool off)."""
    (first, first_pid), _ = two_workers(shm_client)
    before = set(held_segments_of(first_pid))
    made = shm_client.submit(make_array, 3 * MB, workers=[first], pure=False)
    made.result(timeout=30)
    wait_in_segments(shm_client, first, made.key)
    [name] = set(held_segments_of(first_pid)) - before

    del made

    poll(lambda: name not in segments_of(first_pid), timeout=10, what="segment freed")
    assert set(held_segments_of(first_pid)) <= before


def test_a_segment_gone_meanwhile_falls_back_to_tcp(shm_client):
    (first, first_pid), (second, _) = two_workers(shm_client)
    before = set(segments_of(first_pid))
    made = shm_client.submit(make_array, 4 * MB, workers=[first], pure=False)
    made.result(timeout=30)  # a reader on the host: written into shared memory now
    wait_in_segments(shm_client, first, made.key)
    segments.unlink(sorted(set(segments_of(first_pid)) - before))  # as if released meanwhile

    moved = shm_client.submit(checksum, made, workers=[second], pure=False)

    assert moved.result(timeout=30) == checksum(make_array(4 * MB))
    [event] = poll(lambda: transfer_events(shm_client, made.key), what="transfer event")
    assert event["path"] == "tcp" and event["fallback"] == [made.key]


def test_a_worker_killed_by_sigkill_leaves_no_segments(shm_client):
    (first, first_pid), _ = two_workers(shm_client)
    made = shm_client.submit(make_array, 2 * MB, workers=[first], pure=False)
    made.result(timeout=30)  # a reader on the host: written into shared memory now
    wait_in_segments(shm_client, first, made.key)
    assert segments_of(first_pid)

    os.kill(first_pid, signal.SIGKILL)

    poll(lambda: not segments_of(first_pid), timeout=15, what="the nanny removed the segments")
    poll(lambda: len(shm_client.scheduler_info()["workers"]) == 2, timeout=30, what="restarted")


def test_a_starting_worker_removes_segments_of_dead_processes(shm_cluster):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(dead.stdout)
    orphan = f"{segments.PREFIX}{pid}-0-orphan"
    write_segment(orphan, memoryview(b"left behind"))
    assert segments_of(pid)

    shm_cluster.scale(3)
    with Client(shm_cluster) as client:
        client.wait_for_workers(3, timeout=30)
        assert not segments_of(pid)
        shm_cluster.scale(2)
        poll(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=30, what="scaled down")


@pytest.fixture(scope="module")
def tcp_client() -> Iterator[Client]:
    with two_worker_cluster(shared_memory=False) as cluster, Client(cluster) as client:
        yield client


def test_switched_off_by_config_results_move_over_tcp(tcp_client):
    (first, first_pid), (second, _) = two_workers(tcp_client)
    made = tcp_client.submit(make_array, 2 * MB, workers=[first], pure=False)
    moved = tcp_client.submit(checksum, made, workers=[second], pure=False)

    assert moved.result(timeout=30) == checksum(make_array(2 * MB))
    assert not segments_of(first_pid)
    [event] = poll(lambda: transfer_events(tcp_client, made.key), what="transfer event")
    assert event["path"] == "tcp" and "fallback" not in event
    assert made.result(timeout=30)[-1] == make_array(2 * MB)[-1]


def test_the_nanny_removes_the_segments_of_its_dead_worker(tcp_client):
    """With shared memory off the next worker removes nothing: this is the nanny's doing."""
    (_, pid), _ = two_workers(tcp_client)
    planted = f"{segments.PREFIX}{pid}-0-planted"
    write_segment(planted, memoryview(b"as if the worker had made it"))

    os.kill(pid, signal.SIGKILL)

    poll(lambda: not segments_of(pid), timeout=15, what="the nanny removed the segment")
    poll(lambda: len(tcp_client.scheduler_info()["workers"]) == 2, timeout=30, what="restarted")


def test_workers_with_shared_memory_start_with_non_temporal_copies(shm_client, tcp_client):
    (_, shm_pid), _ = two_workers(shm_client)
    (_, tcp_pid), _ = two_workers(tcp_client)

    setting = f"{nontemporal.THRESHOLD_TUNABLE}={CHUNK:#x}"
    assert setting in start_environ(shm_pid).get(nontemporal.TUNABLES_ENV_VAR, "")
    assert nontemporal.THRESHOLD_TUNABLE not in start_environ(tcp_pid).get(
        nontemporal.TUNABLES_ENV_VAR, ""
    )


def test_a_glibc_tunable_set_already_is_kept_and_others_are_added_to():
    tunables = nontemporal.TUNABLES_ENV_VAR
    with config.set({"worker.shared-memory": True}):
        mine = {tunables: f"{nontemporal.THRESHOLD_TUNABLE}=0x10000000"}
        assert nontemporal.worker_environ(mine) == mine
        other = nontemporal.worker_environ({tunables: "glibc.malloc.arena_max=2"})
        assert other[tunables] == (
            f"glibc.malloc.arena_max=2:{nontemporal.THRESHOLD_TUNABLE}={CHUNK:#x}"
        )


def test_a_segment_maps_copy_on_write(tmp_path):
    name = segments.segment_name("some-key")
    write_segment(name, memoryview(b"abc" * 1000))
    try:
        mine, theirs = segments.map_segment(name, 3000), segments.map_segment(name, 3000)
        mine[:3] = b"xyz"
        assert theirs[:3] == b"abc" and mine[:3] == b"xyz"
        with pytest.raises(ValueError, match="not 10 bytes"):
            segments.map_segment(name, 10)
        with pytest.raises(ValueError, match="not a storied shared-memory segment"):
            segments.map_segment("../etc/passwd", 10)
    finally:
        segments.unlink([name])
    with pytest.raises(FileNotFoundError):
        segments.map_segment(name, 3000)


def make_frame(n: int) -> Any:
    import pandas as pd

    return pd.DataFrame({"a": np.arange(n, dtype="f8"), "b": np.ones(n)})


def frame_total(frame: Any) -> float:
    return float(frame["a"].sum() + frame["b"].sum())


def test_a_pandas_frame_moves_through_shared_memory(shm_client):
    (first, _), (second, _) = two_workers(shm_client)
    made = shm_client.submit(make_frame, 1_000_000, workers=[first], pure=False)

    moved = shm_client.submit(frame_total, made, workers=[second], pure=False)

    assert moved.result(timeout=30) == frame_total(make_frame(1_000_000))
    [event] = poll(lambda: transfer_events(shm_client, made.key), what="transfer event")
    assert event["path"] == "shm"
    assert made.result(timeout=30).equals(make_frame(1_000_000))


def _scribble_elsewhere(client: Any) -> tuple[int, int]:
    """A result made on one worker, zeroed in place by a task on the other, then read where
    it was made. (Not gathered after: in Dask as here the task zeroed the replica its worker
    keeps, and a gather may read either holder.)"""
    first, second = sorted(client.scheduler_info()["workers"])[:2]
    made = client.submit(make_array, 4 * MB, workers=[first], pure=False)
    scribbled = client.submit(scribble_then_checksum, made, workers=[second], pure=False)
    at_home = client.submit(checksum, made, workers=[first], pure=False)
    return scribbled.result(timeout=30), at_home.result(timeout=30)


def test_changing_an_input_in_place_behaves_as_on_dask(shm_client):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        theirs = _scribble_elsewhere(dask_client)
    ours = _scribble_elsewhere(shm_client)
    assert ours == theirs
    assert ours == (0, checksum(make_array(4 * MB)))


def test_a_closed_cluster_leaves_no_segments():
    with (
        config.set({"worker.shared-memory": True}),
        LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        [(_, info)] = client.scheduler_info()["workers"].items()
        held = client.submit(make_array, 2 * MB, pure=False)
        held.result(timeout=30)
        assert segments_of(info["pid"])
    assert not segments_of(info["pid"])


def test_a_spilled_result_frees_its_segments_and_comes_back_whole():
    settings = {
        "worker.shared-memory": True,
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
        [(_, info)] = client.scheduler_info()["workers"].items()
        first = client.submit(make_array, 20 * MB, pure=False)
        first.result(timeout=30)
        [segment] = segments_of(info["pid"])

        # past the target (60% of 50 MB), the least recently used result goes to disk
        later = client.map(make_array, [20 * MB, 20 * MB], pure=False)
        client.gather(client.map(checksum, later))

        poll(lambda: segment not in segments_of(info["pid"]), what="the spilled segment unlinked")
        assert client.submit(checksum, first).result(timeout=30) == checksum(make_array(20 * MB))


def _array_pipeline(client: Any) -> tuple[float, float, list[float]]:
    """Dask's futures example (submit, pass futures on, gather) with large arrays, each step
    on the other worker, so every input moves between processes."""
    first, second = sorted(client.scheduler_info()["workers"])[:2]
    x = client.submit(np.linspace, 0, 1, 5_000_000, workers=[first])
    y = client.submit(np.multiply, x, 2, workers=[second])
    z = client.submit(np.add, x, y, workers=[first])
    total = client.submit(np.sum, z, workers=[second])
    gathered = client.gather([x, z])
    return float(total.result(timeout=30)), float(gathered[1][-1]), list(gathered[0][:3])


def test_dasks_futures_example_with_arrays_gives_dasks_results(shm_client, dask_client):
    ours = _array_pipeline(shm_client)
    assert ours == _array_pipeline(dask_client)

    def moved_through_shm() -> set[str]:
        return {
            key.split("-")[0]
            for _, msg in shm_client.get_events("transfer")
            if msg.get("path") == "shm"
            for key in msg["keys"]
        }

    poll(lambda: {"linspace", "multiply"} <= moved_through_shm(), what="inputs moved by shm")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"worker.shared-memory": "yes"}, 'worker.shared-memory must be true, false or "auto"'),
        ({"worker.shared-memory-threshold": "lots"}, "worker.shared-memory-threshold: cannot"),
        ({"worker.shared-memory-limit": "lots"}, "worker.shared-memory-limit: cannot"),
        ({"worker.shared-memory-pool": "lots"}, "worker.shared-memory-pool: cannot"),
    ],
)
def test_a_bad_setting_is_refused_when_the_worker_is_made(settings, message):
    from storied.worker.server import Worker

    with config.set(settings), pytest.raises(ValueError, match=message):
        Worker("tcp://127.0.0.1:1")
