"""A task's duration, as a worker reports it: the run of its function alone, as Dask's
"compute" span. Queuing sizes a worker's backlog by it, so a function's first unpickling on a
worker (a fresh cluster's first task of each function) must not make tasks look slow."""

from __future__ import annotations

import time
from collections.abc import Callable

from storied import Client, get_task_stream

#: how long the function below takes to unpickle on a worker
LOAD_SECONDS = 0.5


def inc(x: int) -> int:
    return x + 1


def _load_slowly() -> Callable[[int], int]:
    time.sleep(LOAD_SECONDS)
    return inc


class SlowToUnpickle:
    """A task function whose unpickling takes ``LOAD_SECONDS``, as a heavy import would."""

    def __call__(self, x: int) -> int:
        return inc(x)

    def __reduce__(self) -> tuple[Callable[[], Callable[[int], int]], tuple[()]]:
        return _load_slowly, ()


def test_unpickling_the_function_is_no_part_of_a_tasks_duration(client: Client) -> None:
    with get_task_stream(client) as stream:
        started = time.monotonic()
        assert client.submit(SlowToUnpickle(), 1).result(timeout=30) == 2
        elapsed = time.monotonic() - started
    assert elapsed >= LOAD_SECONDS, "the worker did unpickle it slowly"
    (entry,) = stream.data
    (span,) = entry["startstops"]
    assert span["action"] == "compute"
    assert span["stop"] - span["start"] < LOAD_SECONDS / 2
