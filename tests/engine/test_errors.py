"""Failing tasks and bad input (issue 2, point 7 and "Bad input")."""

from __future__ import annotations

import gc
import threading
import time
import traceback
from pathlib import Path

import pytest

from storied import Client, wait

from .helpers import fail, inc, poll

UNPICKLABLE_LOCK = r"could not serialize .*lock"


class CustomError(Exception):
    """An exception type only this module defines: it must come back as itself."""


def raise_custom(x: int) -> None:
    raise CustomError(f"custom {x}")


def fail_until(path: str, attempts_needed: int) -> int:
    """Fails until it has been called ``attempts_needed`` times (counted in a shared file)."""
    with open(path, "a") as log:
        log.write("attempt\n")
    attempts = len(Path(path).read_text().splitlines())
    if attempts < attempts_needed:
        raise RuntimeError(f"attempt {attempts} fails")
    return attempts


def frame_names(tb: object) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(tb)]  # type: ignore[arg-type]


def test_result_reraises_the_original_exception_with_the_remote_traceback(client):
    future = client.submit(fail, "x")
    with pytest.raises(ZeroDivisionError, match="cannot handle 'x'") as info:
        future.result(timeout=10)
    assert "fail" in frame_names(info.value.__traceback__)
    assert future.status == "error"
    assert isinstance(future.exception(timeout=1), ZeroDivisionError)
    assert "fail" in frame_names(future.traceback(timeout=1))


def test_an_exception_type_defined_by_the_user_comes_back_as_itself(client):
    with pytest.raises(CustomError, match="custom 3"):
        client.submit(raise_custom, 3).result(timeout=10)


def test_dependents_of_a_failed_task_are_erred_with_its_cause(client):
    bad = client.submit(fail, "root")
    child = client.submit(inc, bad)
    grandchild = client.submit(inc, child)
    for future in (child, grandchild):
        with pytest.raises(ZeroDivisionError, match="cannot handle 'root'"):
            future.result(timeout=10)
        assert future.status == "error"


def test_the_cluster_keeps_working_after_failures(client):
    failures = client.map(fail, range(10))
    wait(failures, timeout=10)
    assert {f.status for f in failures} == {"error"}
    assert client.gather(client.map(inc, range(10))) == list(range(1, 11))


def test_releasing_a_failed_future_forgets_the_task(cluster, client):
    """With the cyclic garbage collector off: dropping the last reference must be enough."""
    future = client.submit(fail, "release")
    future.exception(timeout=10)
    key = future.key
    gc.disable()
    try:
        del future
        poll(
            lambda: key not in cluster.scheduler.state.tasks,
            what="the scheduler forgot the task of a released failed future",
        )
    finally:
        gc.enable()


def test_a_failed_call_submitted_again_after_release_fails_again(cluster, client):
    future = client.submit(fail, "again")
    assert isinstance(future.exception(timeout=10), ZeroDivisionError)
    key = future.key
    del future
    gc.collect()  # the previous test's concern; this one is about the worker forgetting the error
    poll(lambda: key not in cluster.scheduler.state.tasks)
    again = client.submit(fail, "again")
    assert again.key == key
    assert isinstance(again.exception(timeout=10), ZeroDivisionError)


def test_retries_rerun_a_failing_task(client, tmp_path):
    attempts = tmp_path / "attempts"
    assert client.submit(fail_until, str(attempts), 3, retries=2).result(timeout=10) == 3
    assert len(attempts.read_text().splitlines()) == 3


def test_retries_give_up_after_n_reruns(client, tmp_path):
    attempts = tmp_path / "attempts"
    future = client.submit(fail_until, str(attempts), 10, retries=2)
    with pytest.raises(RuntimeError, match="attempt 3 fails"):
        future.result(timeout=10)
    assert len(attempts.read_text().splitlines()) == 3


def test_an_unpicklable_function_fails_at_submit(client):
    lock = threading.Lock()

    def uses_lock(x: int) -> int:
        with lock:
            return x

    with pytest.raises(TypeError, match=UNPICKLABLE_LOCK):
        client.submit(uses_lock, 1)


def test_an_unpicklable_argument_fails_at_submit(client):
    with pytest.raises(TypeError, match=UNPICKLABLE_LOCK):
        client.submit(inc, threading.Lock())
    with pytest.raises(TypeError, match=UNPICKLABLE_LOCK):
        client.map(inc, [1, threading.Lock()])
    assert client.submit(inc, 1).result(timeout=10) == 2


def test_a_non_callable_fails_at_submit(client):
    with pytest.raises(TypeError, match="callable"):
        client.submit(42, 1)
    with pytest.raises(TypeError, match="callable"):
        client.map("inc", [1])


def test_an_unreachable_scheduler_fails_within_the_timeout():
    start = time.monotonic()
    with pytest.raises((OSError, TimeoutError)):
        Client("tcp://127.0.0.1:1", timeout=1)
    assert time.monotonic() - start < 3


def test_a_malformed_address_is_refused():
    with pytest.raises((ValueError, OSError)):
        Client("not-an-address", timeout=1)


def test_malformed_client_messages_do_not_crash_the_scheduler(cluster, client):
    for msg in (
        {
            "op": "update-graph",
            "tasks": [["only-a-key"]],
            "functions": {},
            "wanted": [],
            "stimulus_id": "bad-1",
        },
        {
            "op": "update-graph",
            "tasks": "not a list",
            "functions": {},
            "wanted": [],
            "stimulus_id": "bad-2",
        },
        {"op": "client-releases-keys", "keys": 42},
        {"op": "no-such-operation"},
        {"no-op": True},
    ):
        client._send(msg)
    with Client(cluster) as fresh:
        assert fresh.submit(inc, 100).result(timeout=10) == 101
    assert cluster.scheduler.status == "running"
