"""What the cluster-management tests share: waiting with a deadline, reading the record,
and an in-process dask.distributed cluster to compare shapes with."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from storied import Client


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (its value), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still not true after {timeout}s"
        time.sleep(0.05)


def events(client: Client, topic: str, action: str) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events(topic) if msg.get("action") == action]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def record_run(path: str, value: int) -> int:
    """A task that leaves a line in ``path`` each time it runs: executions are counted."""
    with open(path, "a") as log:
        log.write(f"{value}\n")
    return value * 10


def runs(path: Any) -> int:
    try:
        with open(path) as log:
            return len(log.readlines())
    except FileNotFoundError:
        return 0
