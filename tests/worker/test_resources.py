"""Resources and user priorities in the pure worker state machine."""

from __future__ import annotations

from typing import Any

import pytest

from storied.worker.state import Instruction, WorkerState

from .test_state import executed, succeed


def compute(
    state: WorkerState,
    key: str,
    priority: int = 0,
    who_has: dict[str, list[str]] | None = None,
    **options: Any,
) -> list[Instruction]:
    return state.compute_task(
        key, "f", b"args", priority, who_has or {}, f"compute-{key}", **options
    )


@pytest.fixture
def gpu_worker(recorder) -> WorkerState:
    """Four threads but one GPU."""
    return WorkerState(nthreads=4, recorder=recorder, resources={"GPU": 1})


def test_a_task_holds_its_resources_while_it_runs(gpu_worker, recorder):
    assert executed(compute(gpu_worker, "g1", resources={"GPU": 1})) == ["g1"]
    assert gpu_worker.available_resources == {"GPU": 0}
    assert executed(compute(gpu_worker, "g2", resources={"GPU": 1})) == []
    assert gpu_worker.tasks["g2"].state == "constrained"
    assert executed(succeed(gpu_worker, "g1")) == ["g2"]
    assert executed(succeed(gpu_worker, "g2")) == []
    assert gpu_worker.available_resources == {"GPU": 1}
    assert [t[1:3] for t in recorder.transitions if t[0] == "g2"] == [
        ("released", "constrained"),
        ("constrained", "executing"),
        ("executing", "memory"),
    ]


def test_tasks_without_resources_use_the_threads_a_waiting_gpu_task_does_not(gpu_worker):
    compute(gpu_worker, "g1", resources={"GPU": 1})
    compute(gpu_worker, "g2", resources={"GPU": 1})
    assert executed(compute(gpu_worker, "cpu1")) == ["cpu1"]
    assert executed(compute(gpu_worker, "cpu2")) == ["cpu2"]
    assert len(gpu_worker.executing) == 3


def test_fractional_claims_share_a_resource(recorder):
    state = WorkerState(nthreads=4, recorder=recorder, resources={"GPU": 1})
    started = [executed(compute(state, f"h{i}", resources={"GPU": 0.5})) for i in range(3)]
    assert started == [["h0"], ["h1"], []]


def test_a_failed_task_gives_its_resources_back(gpu_worker):
    compute(gpu_worker, "g1", resources={"GPU": 1})
    compute(gpu_worker, "g2", resources={"GPU": 1})
    instructions = gpu_worker.execute_failure("g1", {"text": "boom"}, 1.0, 2.0, "failed")
    assert executed(instructions) == ["g2"]


def test_a_cancelled_task_gives_its_resources_back_when_it_stops(gpu_worker):
    compute(gpu_worker, "g1", resources={"GPU": 1})
    compute(gpu_worker, "g2", resources={"GPU": 1})
    assert executed(gpu_worker.free_keys(["g1"], "release")) == []
    assert executed(succeed(gpu_worker, "g1")) == ["g2"]


def test_a_released_constrained_task_is_skipped(gpu_worker):
    compute(gpu_worker, "g1", resources={"GPU": 1})
    compute(gpu_worker, "g2", resources={"GPU": 1})
    compute(gpu_worker, "g3", resources={"GPU": 1})
    gpu_worker.free_keys(["g2"], "release")
    assert executed(succeed(gpu_worker, "g1")) == ["g3"]


def test_higher_user_priority_runs_first_then_the_schedulers_order(recorder):
    state = WorkerState(nthreads=1, recorder=recorder)
    assert executed(compute(state, "busy")) == ["busy"]
    compute(state, "low-early", priority=1)
    compute(state, "low-late", priority=2)
    compute(state, "high", priority=3, user_priority=10)
    compute(state, "negative", priority=0, user_priority=-1)
    order = []
    key = "busy"
    for _ in range(4):
        [key] = executed(succeed(state, key))
        order.append(key)
    assert order == ["high", "low-early", "low-late", "negative"]


def test_equal_priorities_run_in_arrival_order(recorder):
    state = WorkerState(nthreads=1, recorder=recorder)
    compute(state, "busy")
    for key in ("z", "a", "m"):
        compute(state, key, priority=7)
    order = [executed(succeed(state, k)) for k in ("busy", "z", "a")]
    assert order == [["z"], ["a"], ["m"]]


def test_a_constrained_task_of_higher_priority_goes_before_ready_ones_once_it_fits(gpu_worker):
    compute(gpu_worker, "g1", resources={"GPU": 1})
    for i in range(3):
        compute(gpu_worker, f"cpu{i}", priority=10)
    compute(gpu_worker, "urgent-gpu", priority=1, resources={"GPU": 1})
    compute(gpu_worker, "cpu-last", priority=20)
    assert executed(succeed(gpu_worker, "g1")) == ["urgent-gpu"]
    assert executed(succeed(gpu_worker, "cpu0")) == ["cpu-last"]
