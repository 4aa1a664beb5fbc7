"""WorkerState driven by hand: stimuli in, instructions and recorded transitions out."""

from __future__ import annotations

from typing import Any

import pytest

from storied.worker.state import (
    Execute,
    ForgetData,
    GatherDep,
    Instruction,
    SendMessage,
    WorkerState,
)


def compute(
    state: WorkerState,
    key: str,
    priority: int = 0,
    who_has: dict[str, list[str]] | None = None,
    stimulus_id: str = "compute",
) -> list[Instruction]:
    return state.compute_task(
        key, "f-inc", f"args of {key}".encode(), priority, who_has or {}, stimulus_id
    )


def succeed(state: WorkerState, key: str) -> list[Instruction]:
    return state.execute_success(key, 8, "builtins.int", 1.0, 2.0, f"success-{key}")


def sent(instructions: list[Instruction], op: str) -> list[dict[str, Any]]:
    return [i.msg for i in instructions if isinstance(i, SendMessage) and i.msg["op"] == op]


def executed(instructions: list[Instruction]) -> list[str]:
    return [i.key for i in instructions if isinstance(i, Execute)]


def forgotten(instructions: list[Instruction]) -> list[str]:
    return [k for i in instructions if isinstance(i, ForgetData) for k in i.keys]


@pytest.fixture
def state(recorder) -> WorkerState:
    return WorkerState(nthreads=1, recorder=recorder)


def test_a_task_without_inputs_executes_at_once(state, recorder):
    instructions = compute(state, "inc-1", stimulus_id="compute-1")
    assert instructions == [Execute("inc-1", "f-inc", b"args of inc-1")]
    assert recorder.transitions == [
        ("inc-1", "released", "ready", {}, "compute-1", None),
        ("inc-1", "ready", "executing", {}, "compute-1", None),
    ]


def test_no_more_tasks_run_than_threads_and_the_most_urgent_goes_first(state):
    assert executed(compute(state, "busy", priority=0)) == ["busy"]
    assert executed(compute(state, "later", priority=5)) == []
    assert executed(compute(state, "sooner", priority=1)) == []
    assert state.tasks["sooner"].state == "ready"
    assert executed(succeed(state, "busy")) == ["sooner"]
    assert executed(succeed(state, "sooner")) == ["later"]
    assert executed(succeed(state, "later")) == []


def test_two_threads_run_two_tasks(recorder):
    state = WorkerState(nthreads=2, recorder=recorder)
    assert executed(compute(state, "a") + compute(state, "b") + compute(state, "c")) == ["a", "b"]


def test_inputs_are_fetched_in_one_request_per_holder(state, recorder):
    instructions = compute(
        state,
        "c",
        who_has={"a": ["tcp://w1"], "b": ["tcp://w1"], "d": ["tcp://w2"]},
        stimulus_id="compute-c",
    )
    gathers = sorted((i for i in instructions if isinstance(i, GatherDep)), key=lambda g: g.worker)
    assert [(g.worker, sorted(g.keys)) for g in gathers] == [
        ("tcp://w1", ["a", "b"]),
        ("tcp://w2", ["d"]),
    ]
    assert {g.stimulus_id for g in gathers} == {"compute-c"}
    assert not executed(instructions)
    assert state.tasks["c"].state == "waiting"
    assert recorder.path("a") == ["released", "fetch", "flight"]

    assert executed(state.gather_success("tcp://w1", ["a", "b"], "got-ab")) == []
    assert executed(state.gather_success("tcp://w2", ["d"], "got-d")) == ["c"]
    assert recorder.path("d") == ["released", "fetch", "flight", "memory"]


def test_an_input_already_here_is_not_fetched_again(state):
    compute(state, "a")
    succeed(state, "a")
    instructions = compute(state, "b", who_has={"a": ["tcp://me"]})
    assert not [i for i in instructions if isinstance(i, GatherDep)]
    assert executed(instructions) == ["b"]


def test_an_input_two_tasks_need_is_fetched_once(recorder):
    state = WorkerState(nthreads=2, recorder=recorder)
    first = compute(state, "b", who_has={"a": ["tcp://w1"]})
    second = compute(state, "c", who_has={"a": ["tcp://w1"]})
    assert [i for i in first if isinstance(i, GatherDep)] == [
        GatherDep("tcp://w1", ("a",), "compute")
    ]
    assert not [i for i in second if isinstance(i, GatherDep)]
    assert sorted(executed(state.gather_success("tcp://w1", ["a"], "got-a"))) == ["b", "c"]


def test_gather_failure_tries_another_holder(state):
    compute(state, "b", who_has={"a": ["tcp://w1", "tcp://w2"]})
    instructions = state.gather_failure("tcp://w1", ["a"], "gather-failed")
    assert sent(instructions, "missing-data") == [
        {
            "op": "missing-data",
            "key": "a",
            "errant_worker": "tcp://w1",
            "stimulus_id": "gather-failed",
        }
    ]
    assert [i for i in instructions if isinstance(i, GatherDep)] == [
        GatherDep("tcp://w2", ("a",), "gather-failed")
    ]
    assert state.tasks["a"].state == "flight"
    assert not sent(instructions, "reschedule")


def test_gather_failure_without_another_holder_gives_the_task_back(state):
    compute(state, "b", who_has={"a": ["tcp://w1"]})
    instructions = state.gather_failure("tcp://w1", ["a"], "gather-failed")
    assert [m["key"] for m in sent(instructions, "missing-data")] == ["a"]
    assert sent(instructions, "reschedule") == [
        {"op": "reschedule", "key": "b", "stimulus_id": "gather-failed"}
    ]
    assert not [i for i in instructions if isinstance(i, GatherDep | Execute)]
    assert state.tasks == {}, "nothing about b or a is kept once b was given back"


def test_an_input_nobody_holds_gives_the_task_back_at_once(state):
    instructions = compute(state, "b", who_has={"a": []})
    assert [m["key"] for m in sent(instructions, "reschedule")] == ["b"]
    assert not executed(instructions)


def test_success_reports_and_drops_fetched_inputs(state, recorder):
    compute(state, "c", who_has={"a": ["tcp://w1"]})
    state.gather_success("tcp://w1", ["a"], "got-a")
    instructions = state.execute_success("c", 24, "builtins.list", 1.5, 2.5, "done-c")
    [msg] = sent(instructions, "task-finished")
    assert msg["startstops"][:2] == [1.5, 2.5]
    assert {k: v for k, v in msg.items() if k != "startstops"} == {
        "op": "task-finished",
        "key": "c",
        "nbytes": 24,
        "type": "builtins.list",
        "stimulus_id": "done-c",
    }
    assert forgotten(instructions) == ["a"]
    assert "a" not in state.tasks
    assert state.tasks["c"].state == "memory"
    assert recorder.path("a")[-2:] == ["memory", "released"]


def test_an_input_this_worker_computed_stays_after_its_dependent_ran(state):
    compute(state, "a")
    succeed(state, "a")
    compute(state, "b", who_has={"a": ["tcp://me"]})
    instructions = succeed(state, "b")
    assert forgotten(instructions) == []
    assert state.tasks["a"].state == "memory", "the scheduler still counts a as held here"


def test_failure_reports_the_error(state):
    compute(state, "a")
    error = {"exception": b"pickled", "traceback": None, "text": "ZeroDivisionError: x"}
    instructions = state.execute_failure("a", error, 1.0, 2.0, "failed-a")
    [msg] = sent(instructions, "task-erred")
    assert msg["startstops"][:2] == [1.0, 2.0]
    assert {k: v for k, v in msg.items() if k != "startstops"} == {
        "op": "task-erred",
        "key": "a",
        "error": error,
        "stimulus_id": "failed-a",
    }
    assert state.tasks["a"].state == "error"


def test_a_failed_task_freed_then_assigned_again_runs_again(state):
    compute(state, "a")
    state.execute_failure("a", {"text": "ZeroDivisionError: x"}, 1.0, 2.0, "failed-a")
    state.free_keys(["a"], "free")
    assert state.tasks == {}
    assert executed(compute(state, "a", stimulus_id="again")) == ["a"]


def test_free_keys_while_executing_drops_the_result(state, recorder):
    compute(state, "a")
    assert state.free_keys(["a"], "free") == []
    assert state.tasks["a"].state == "executing", "a running thread cannot be stopped"
    compute(state, "b")
    instructions = succeed(state, "a")
    assert not sent(instructions, "task-finished")
    assert forgotten(instructions) == ["a"]
    assert "a" not in state.tasks
    assert executed(instructions) == ["b"], "the freed thread takes the next task"
    assert recorder.path("a")[-2:] == ["executing", "released"]


def test_a_task_freed_then_assigned_again_while_running_reports_its_result(state):
    compute(state, "a")
    state.free_keys(["a"], "free")
    assert compute(state, "a", stimulus_id="again") == []
    assert [m["key"] for m in sent(succeed(state, "a"), "task-finished")] == ["a"]


def test_a_dependent_assigned_while_its_input_runs_here_again_runs_after_it(state):
    """Cancel then resubmit of ``a`` and ``b = f(a)``: the scheduler took the cancelled run's
    result for the new run's and assigned ``b`` here while ``a`` ran again. Before, ``b``
    waited forever for ``a``."""
    compute(state, "a")
    succeed(state, "a")
    state.free_keys(["a"], "cancel")
    compute(state, "a", stimulus_id="again")
    assert state.tasks["a"].state == "executing"
    compute(state, "b", who_has={"a": ["tcp://here"]})
    assert state.tasks["b"].state == "waiting"
    assert executed(succeed(state, "a")) == ["b"]


def test_free_keys_drops_held_data(state):
    compute(state, "a")
    succeed(state, "a")
    instructions = state.free_keys(["a"], "free")
    assert forgotten(instructions) == ["a"]
    assert state.tasks == {}


def test_free_keys_of_a_waiting_task_abandons_its_fetches(state):
    compute(state, "b", who_has={"a": ["tcp://w1"]})
    state.free_keys(["b"], "free")
    assert "b" not in state.tasks
    assert state.gather_success("tcp://w1", ["a"], "late") == []
    assert state.tasks == {}, "data that arrives for nobody is not kept"


def test_compute_task_for_data_already_here_reports_it_without_running(state):
    compute(state, "b", who_has={"a": ["tcp://w1"]})
    state.gather_success("tcp://w1", ["a"], "got-a")
    instructions = compute(state, "a", stimulus_id="compute-a")
    assert not executed(instructions)
    assert [m["key"] for m in sent(instructions, "task-finished")] == ["a"]


def test_execute_says_whether_a_client_waits_for_the_result(state):
    """The worker pickles only such a result as it is made (to send it with task-finished)."""
    instructions = state.compute_task("w", "f-inc", b"args of w", 0, {}, "compute", True)
    assert instructions == [Execute("w", "f-inc", b"args of w", wanted=True)]


def test_free_keys_merged_from_several_stimuli_records_each_keys_own(state, recorder):
    for key in ("a", "b"):
        compute(state, key)
        succeed(state, key)
    instructions = state.free_keys(["a", "b"], "finished-x", ["finished-x", "finished-y"])
    assert forgotten(instructions) == ["a", "b"]
    assert [(t[0], t[4]) for t in recorder.transitions if t[2] == "released"] == [
        ("a", "finished-x"),
        ("b", "finished-y"),
    ]
