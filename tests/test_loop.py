"""``call_on_loop``: state owned by a loop's thread, read safely from other threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from storied.loop import call_on_loop


@pytest.fixture
def loop_in_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not loop.is_running():
        assert time.monotonic() < deadline, "loop did not start"
        time.sleep(0.001)
    yield loop, thread
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_runs_on_the_loops_thread_and_passes_results_and_errors_back(loop_in_thread):
    loop, thread = loop_in_thread
    assert call_on_loop(loop, threading.get_ident) == thread.ident

    def fails() -> None:
        raise TimeoutError("the function's own")

    with pytest.raises(TimeoutError, match="the function's own"):
        call_on_loop(loop, fails)


def test_a_loop_that_stops_before_the_call_runs_it_on_the_caller(loop_in_thread):
    loop, thread = loop_in_thread
    blocking = threading.Event()

    def block_then_stop() -> None:
        blocking.set()
        time.sleep(0.3)
        loop.stop()  # the call queued meanwhile never gets its turn on the loop

    loop.call_soon_threadsafe(block_then_stop)
    assert blocking.wait(5)
    assert call_on_loop(loop, threading.get_ident) == threading.get_ident()
    thread.join(5)
    assert not thread.is_alive()
