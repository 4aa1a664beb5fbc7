"""bench/queue_gaps.py: a worker thread's gaps between tasks, and the part of them spent
while the scheduler's process was collecting garbage."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def queue_gaps():
    sys.path.insert(0, str(BENCH))  # it imports its neighbours, as when run from bench/
    try:
        spec = importlib.util.spec_from_file_location("queue_gaps", BENCH / "queue_gaps.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def run(worker: str, start: float, stop: float, thread: int = 0) -> dict[str, object]:
    return {"worker": worker, "thread": thread, "start": start, "stop": stop}


RUNS = [
    run("a", 1.0, 1.1),
    run("b", 1.0, 1.2),
    run("a", 1.3, 1.4),  # out of order on purpose
    run("a", 1.15, 1.2),
    run("b", 1.25, 1.3),
]


def test_gaps_are_per_worker_thread_in_time_order(queue_gaps):
    assert sorted(queue_gaps.gaps_of(RUNS)) == pytest.approx([0.05, 0.05, 0.1])


def test_idle_time_counts_only_gaps_inside_a_pause(queue_gaps):
    # a: gaps 1.1-1.15 and 1.2-1.3; b: 1.2-1.25; the pause 1.12-1.22 covers 0.03 + 0.02 + 0.02
    assert queue_gaps.idle_in_pauses(RUNS, [(1.12, 1.22)]) == pytest.approx(0.07)
    assert queue_gaps.idle_in_pauses(RUNS, [(2.0, 3.0)]) == 0.0


def test_the_histogram_puts_each_gap_in_one_bucket(queue_gaps):
    counts = queue_gaps.histogram([10e-6, 30e-6, 30e-3, 1.0])
    assert sum(counts) == 4
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 2
