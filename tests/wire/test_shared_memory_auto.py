"""``worker.shared-memory: auto``: on where ``/dev/shm`` is a writable tmpfs with room for the
worker's pool and its results, on TCP (said once, at INFO, and as a ``tcp-only`` event) where
it is not: a pool larger than ``/dev/shm``'s free space, Docker's 64 MiB ``/dev/shm``, a
``/dev/shm`` on disk (both made for real in a mount namespace of the worker's own)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storied import Client, LocalCluster, config
from storied.shm import nontemporal, segments, setting
from storied.shm.writer import CHUNK
from tests.engine.helpers import poll
from tests.wire.shm_helpers import (
    MB,
    checksum,
    make_array,
    segments_of,
    start_environ,
    two_worker_cluster,
    two_workers,
)

pytestmark = pytest.mark.skipif(segments.host_id() is None, reason="no /dev/shm here")

STORIED = str(Path(sys.executable).with_name("storied"))
NON_TEMPORAL = f"{nontemporal.THRESHOLD_TUNABLE}={CHUNK:#x}"
TCP_ONLY_LOG = 'worker.shared-memory is "auto"'


def transfer_events(client: Client, action: str) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events("transfer") if msg.get("action") == action]


def fetched_path(client: Client, key: str) -> str:
    [event] = poll(
        lambda: [m for m in transfer_events(client, "fetched") if key in m["keys"]],
        what=f"the fetch of {key}",
    )
    return event["path"]


def tcp_only_logs(client: Client, worker: str) -> list[str]:
    return [
        message
        for level, message in client.get_worker_logs(workers=[worker])[worker]
        if level == "INFO" and TCP_ONLY_LOG in message
    ]


def test_auto_hands_results_over_in_shared_memory_on_a_roomy_tmpfs():
    reason = setting.why_not_auto(setting.configured().pool)
    if reason is not None:
        pytest.skip(f"this host's /dev/shm does not qualify: {reason}")
    with two_worker_cluster("auto") as cluster, Client(cluster) as client:
        (first, first_pid), (second, second_pid) = two_workers(client)
        made = client.submit(make_array, 20 * MB, workers=[first], pure=False)
        moved = client.submit(checksum, made, workers=[second], pure=False)

        assert moved.result(timeout=30) == checksum(make_array(20 * MB))
        assert fetched_path(client, made.key) == "shm"
        assert segments_of(first_pid)
        assert not transfer_events(client, "tcp-only")
        for pid in (first_pid, second_pid):
            assert NON_TEMPORAL in start_environ(pid).get(nontemporal.TUNABLES_ENV_VAR, "")


def test_auto_stays_on_tcp_where_dev_shm_has_no_room_for_the_pool():
    """A pool larger than /dev/shm's free space stands in for a small /dev/shm."""
    pool = segments.free_bytes() + 2**30
    with (
        config.set({"worker.shared-memory-pool": pool}),
        two_worker_cluster("auto") as cluster,
        Client(cluster) as client,
    ):
        (first, first_pid), (second, second_pid) = two_workers(client)
        made = client.submit(make_array, 20 * MB, workers=[first], pure=False)
        moved = client.submit(checksum, made, workers=[second], pure=False)

        assert moved.result(timeout=30) == checksum(make_array(20 * MB))
        assert fetched_path(client, made.key) == "tcp"
        assert not segments_of(first_pid)
        said = poll(
            lambda: len(events := transfer_events(client, "tcp-only")) == 2 and events,
            what="a tcp-only event of each worker",
        )
        assert {msg["worker"] for msg in said} == {first, second}
        assert all("worker.shared-memory-pool" in msg["reason"] for msg in said)
        for worker, pid in ((first, first_pid), (second, second_pid)):
            assert len(tcp_only_logs(client, worker)) == 1
            assert NON_TEMPORAL not in start_environ(pid).get(nontemporal.TUNABLES_ENV_VAR, "")


def mount_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    tried = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "none", "/mnt"],
        capture_output=True,
        timeout=10,
    )
    return tried.returncode == 0


@pytest.fixture(scope="module")
def auto_cluster() -> Iterator[LocalCluster]:
    with two_worker_cluster("auto") as cluster:
        yield cluster


@pytest.mark.skipif(not mount_namespaces_work(), reason="cannot make mount namespaces here")
@pytest.mark.parametrize(
    ("mount", "reason"),
    [
        (["-t", "tmpfs", "-o", "size=64m", "tmpfs"], "has 64 MiB free"),
        (["--bind", "{tmp_path}"], "is not a tmpfs (it is "),
    ],
    ids=["docker-64MiB", "on-disk"],
)
def test_auto_stays_on_tcp_in_a_dev_shm_it_cannot_use(auto_cluster, tmp_path, mount, reason):
    """A worker whose /dev/shm is Docker's default, or a directory on disk (its own mount
    namespace), says so once and serves over TCP; its results and its peers' arrive whole
    (a peer's segments are not in its /dev/shm: those it fetches again over TCP)."""
    mount = [part.format(tmp_path=tmp_path) for part in mount]
    script = f'mount {" ".join(mount)} /dev/shm && exec "$@"'
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
    command += [STORIED, "worker", auto_cluster.scheduler_address, "--no-nanny"]
    env = {**os.environ, "STORIED_WORKER__SHARED_MEMORY": "auto"}
    if auto_cluster.security.token:
        env["STORIED_AUTH_TOKEN"] = auto_cluster.security.token
    with Client(auto_cluster) as client:
        before = set(client.scheduler_info()["workers"])
        process = subprocess.Popen([*command, "--name", "boxed"], env=env)
        try:
            joined = poll(
                lambda: (
                    set(client.scheduler_info()["workers"]) - before or process.poll() is not None
                ),
                30,
                "joined",
            )
            assert process.poll() is None, "the worker in its mount namespace exited"
            [boxed] = joined
            [said] = poll(
                lambda: [m for m in transfer_events(client, "tcp-only") if m["worker"] == boxed],
                what="tcp-only event",
            )
            assert reason in said["reason"]
            host = min(before)  # a worker of the host's /dev/shm

            made = client.submit(make_array, 20 * MB, workers=[boxed], pure=False)
            moved = client.submit(checksum, made, workers=[host], pure=False)
            assert moved.result(timeout=30) == checksum(make_array(20 * MB))
            assert fetched_path(client, made.key) == "tcp"
            there = client.submit(make_array, 20 * MB + 1, workers=[host], pure=False)
            back = client.submit(checksum, there, workers=[boxed], pure=False)
            assert back.result(timeout=30) == checksum(make_array(20 * MB + 1))
            assert len(tcp_only_logs(client, boxed)) == 1
        finally:
            process.terminate()
            process.wait(15)
        poll(lambda: boxed not in client.scheduler_info()["workers"], 15, "the worker left")


def test_filesystem_type_reads_the_last_mount_stacked_on_a_point(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "25 27 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1k\n"
        "30 25 0:27 / /dev/shm rw,relatime - ext4 /dev/vdb rw\n"
        "31 27 0:28 / /mnt/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert setting.filesystem_type("/dev/shm", str(table)) == "ext4"
    assert setting.filesystem_type("/dev/shmore", str(table)) == "ext4"
    assert setting.filesystem_type("/mnt/with space", str(table)) == "tmpfs"
    assert setting.filesystem_type("/proc/self") == "proc"
    assert setting.filesystem_type("/", str(tmp_path / "missing")) is None


@pytest.mark.parametrize("mode", [True, False, "auto"])
def test_true_false_and_auto_are_the_settings(mode):
    with config.set({"worker.shared-memory": mode}):
        assert setting.configured().mode == mode
