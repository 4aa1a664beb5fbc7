"""What the cluster-management tests share: waiting with a deadline and counting task runs
(``alive`` and ``events`` come from the nanny tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nanny.helpers import alive, events

__all__ = ["alive", "events", "record_run", "runs", "wait_until"]


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (its value), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still not true after {timeout}s"
        time.sleep(0.05)


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
