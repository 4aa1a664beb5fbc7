"""What the shared-memory tests share: the tasks they run, where a worker's segments are, and a
two-worker cluster with shared memory on or off."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import cloudpickle
import numpy as np

from storied import Client, LocalCluster, config
from storied.shm import segments

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 10**6


def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype="u1")


def checksum(array: np.ndarray) -> int:
    return int(array.sum(dtype="u8"))


def segments_of(pid: int) -> list[str]:
    return [n for n in os.listdir(segments.DIRECTORY) if n.startswith(f"{segments.PREFIX}{pid}-")]


def held_segments_of(pid: int) -> list[str]:
    """The segments of ``pid`` that hold results (not kept in its pool for the next ones)."""
    return [name for name in segments_of(pid) if not name.endswith("-pool")]


def pooled_segments_of(pid: int) -> list[str]:
    return [name for name in segments_of(pid) if name.endswith("-pool")]


def start_environ(pid: int) -> dict[str, str]:
    """The environment process ``pid`` started with (what glibc read its tunables from)."""
    with open(f"/proc/{pid}/environ", "rb") as file:
        pairs = [entry.split(b"=", 1) for entry in file.read().split(b"\0") if b"=" in entry]
    return {name.decode(): value.decode() for name, value in pairs}


def two_workers(client: Client) -> tuple[tuple[str, int], tuple[str, int]]:
    """``(address, pid)`` of the cluster's first two workers, by address."""
    info = client.scheduler_info()["workers"]
    first, second = sorted(info)[:2]
    return (first, info[first]["pid"]), (second, info[second]["pid"])


@contextlib.contextmanager
def two_worker_cluster(shared_memory: bool | str) -> Iterator[LocalCluster]:
    """Two worker processes of one thread each, on loopback, ``worker.shared-memory`` true,
    false or ``"auto"``."""
    with (
        config.set({"worker.shared-memory": shared_memory}),
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1") as cluster,
    ):
        yield cluster
