"""Task functions and waiting helpers shared by the integration tests."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

from storied import get_worker
from storied.shm import segments

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KEY_HEX = "[0-9a-f]{32}"


def interruptible() -> None:
    """``Popen(preexec_fn=interruptible)``: the child takes Ctrl-C (SIGINT) as a script run
    from a terminal does, even when the tests run as a background job, whose shell starts it
    with SIGINT ignored (Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def poll(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Wait until ``predicate()`` is truthy and return its value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {timeout}s: {what or predicate.__name__}")
        time.sleep(0.01)


def wait_for_file(path: str, timeout: float = 30.0) -> str:
    """A task that blocks until the test creates ``path``; returns the worker's address."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return get_worker().address


def key_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}-{KEY_HEX}")


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def total(values: Any) -> int:
    """Sums numbers found in nested lists, tuples and dict values."""
    if isinstance(values, dict):
        return sum(total(v) for v in values.values())
    if isinstance(values, list | tuple):
        return sum(total(v) for v in values)
    return values


def fail(x: Any) -> None:
    raise ZeroDivisionError(f"cannot handle {x!r}")


def counted_inc(x: int, topic: str) -> int:
    """``inc`` that records each run in the event ledger, so tests can count executions."""
    get_worker().log_event(topic, {"x": x})
    return x + 1


def where_am_i() -> tuple[str, str]:
    worker = get_worker()
    return worker.address, worker.name


def write_segment(name: str, buffer: memoryview) -> None:
    """Plant shared-memory segment ``name`` holding a copy of ``buffer``, as a worker would."""
    segments.create_segment(name)
    try:
        fd = segments.open_for_writing(name)
        try:
            segments.write_at(fd, buffer, 0)
        finally:
            os.close(fd)
    except BaseException:
        segments.unlink([name])
        raise
