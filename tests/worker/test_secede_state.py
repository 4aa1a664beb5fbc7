"""Seceded tasks in the pure worker state machine: they give up their thread slot and take
one back (``rejoin``) only when it is free."""

from __future__ import annotations

import pytest

from storied.worker.state import Rejoin, SendMessage, WorkerState
from tests.worker.test_state import compute, executed, sent, succeed


def rejoined(instructions: list) -> list[str]:
    return [i.key for i in instructions if isinstance(i, Rejoin)]


@pytest.fixture
def state(recorder) -> WorkerState:
    return WorkerState(nthreads=1, recorder=recorder)


def test_a_seceded_task_gives_its_slot_to_the_next_ready_task(state, recorder):
    assert executed(compute(state, "parent")) == ["parent"]
    assert executed(compute(state, "child")) == []
    assert executed(state.secede("parent", "secede-1")) == ["child"]
    assert state.tasks["parent"].state == "long-running"
    assert state.long_running == {state.tasks["parent"]}
    assert recorder.path("parent") == ["released", "ready", "executing", "long-running"]
    assert ("parent", "executing", "long-running", {}, "secede-1", None) in recorder.transitions


def test_rejoin_waits_for_a_free_slot_and_comes_before_ready_tasks(state, recorder):
    compute(state, "parent")
    compute(state, "child")
    state.secede("parent", "secede")
    compute(state, "other")
    assert rejoined(state.rejoin("parent", "rejoin-1")) == []  # "child" holds the one slot
    assert state.tasks["parent"].state == "long-running"
    instructions = succeed(state, "child")
    assert rejoined(instructions) == ["parent"]
    assert executed(instructions) == []  # the rejoined task took the freed slot
    assert state.tasks["parent"].state == "executing"
    assert state.tasks["other"].state == "ready"
    assert executed(succeed(state, "parent")) == ["other"]
    assert recorder.path("parent") == [
        "released", "ready", "executing", "long-running", "executing", "memory",
    ]  # fmt: skip


def test_rejoin_with_a_free_slot_goes_on_at_once(state):
    compute(state, "parent")
    state.secede("parent", "secede")
    assert rejoined(state.rejoin("parent", "rejoin")) == ["parent"]
    assert state.executing == {state.tasks["parent"]}
    assert not state.long_running


def test_a_seceded_task_finishing_reports_and_frees_no_slot_it_does_not_hold(state):
    compute(state, "parent")
    state.secede("parent", "secede")
    compute(state, "child")
    instructions = succeed(state, "parent")
    assert [m["key"] for m in sent(instructions, "task-finished")] == ["parent"]
    assert executed(instructions) == []  # "child" still runs in the only slot
    assert state.tasks["parent"].state == "memory"
    assert state.executing == {state.tasks["child"]}


def test_a_seceded_task_that_fails_reports_its_error(state):
    compute(state, "parent")
    state.secede("parent", "secede")
    instructions = state.execute_failure("parent", {"text": "boom"}, 1.0, 2.0, "failed")
    assert [m["key"] for m in sent(instructions, "task-erred")] == ["parent"]
    assert state.tasks["parent"].state == "error"


def test_a_released_seceded_task_is_dropped_when_it_ends(state):
    compute(state, "parent")
    state.secede("parent", "secede")
    state.free_keys(["parent"], "free")
    assert state.tasks["parent"].cancelled
    instructions = succeed(state, "parent")
    assert not any(isinstance(i, SendMessage) for i in instructions)
    assert "parent" not in state.tasks


def test_secede_of_a_task_not_executing_changes_nothing(state, recorder):
    compute(state, "a")
    compute(state, "b")
    before = list(recorder.transitions)
    assert state.secede("b", "secede") == []  # b is only ready
    assert state.secede("unknown", "secede") == []
    state.secede("a", "secede")
    assert state.secede("a", "secede-again") == []
    assert [t for t in recorder.transitions if t[4] == "secede-again"] == []
    assert len(recorder.transitions) > len(before)


def test_rejoin_of_a_task_the_state_does_not_know_lets_its_thread_go(state):
    """After the worker starts afresh, a thread waiting to rejoin must not wait forever."""
    assert state.rejoin("forgotten", "rejoin") == [Rejoin("forgotten")]


def test_several_seceded_tasks_rejoin_one_per_free_slot_in_order(recorder):
    state = WorkerState(nthreads=1, recorder=recorder)
    for key in ("a", "b", "c"):
        compute(state, key)
        state.secede(key, f"secede-{key}")
    assert not state.executing
    assert rejoined(state.rejoin("a", "r") + state.rejoin("b", "r")) == ["a"]
    assert rejoined(state.rejoin("c", "r")) == []
    assert rejoined(succeed(state, "a")) == ["b"]
    assert rejoined(succeed(state, "b")) == ["c"]


def test_a_seceded_task_keeps_the_resources_it_claimed_until_it_ends(recorder):
    """As in Dask: seceding frees a thread slot, not the task's resources."""
    state = WorkerState(nthreads=1, recorder=recorder, resources={"GPU": 1})

    def compute_gpu(key):
        return state.compute_task(key, "f", b"args", 0, {}, f"compute-{key}", resources={"GPU": 1})

    assert executed(compute_gpu("gpu-parent")) == ["gpu-parent"]
    compute_gpu("gpu-child")
    compute(state, "plain")
    assert executed(state.secede("gpu-parent", "secede")) == ["plain"]
    assert state.tasks["gpu-child"].state == "constrained"
    succeed(state, "plain")
    assert state.tasks["gpu-child"].state == "constrained"  # the GPU is still the parent's
    assert executed(succeed(state, "gpu-parent")) == ["gpu-child"]
