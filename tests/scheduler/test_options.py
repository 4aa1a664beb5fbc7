"""Submit options in the pure scheduler: resources, loose restrictions, priorities, the wire."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from storied.scheduler.state import GENERATION_SPAN, SchedulerState, TaskSpec

from .test_state import CLIENT, FUNCTIONS, computed_keys, finish, ops, spec, submit


def with_options(key: str, restrictions: tuple[str, ...] | None = None, **options: Any) -> TaskSpec:
    return TaskSpec(key, "f-inc", b"args", (), 0, restrictions, options)


@pytest.fixture
def state(recorder) -> SchedulerState:
    return SchedulerState(recorder)


def test_a_task_needing_resources_waits_for_a_worker_that_has_them(state, recorder, caplog):
    state.add_worker("tcp://cpu", "cpu", 4, "add-cpu")
    with caplog.at_level(logging.DEBUG, logger="storied.scheduler"):
        submit(state, with_options("train", resources={"GPU": 1}))
    assert state.tasks["train"].state == "no-worker"
    reason = state.no_worker_reasons["train"]
    assert reason == "needs resources {'GPU': 1}: no worker here qualifies"
    assert f"Task train has no worker: {reason}" in caplog.messages
    effects = state.add_worker("tcp://gpu", "gpu", 1, "add-gpu", {"GPU": 2})
    assert computed_keys(effects, "tcp://gpu") == ["train"]
    assert ops(effects.workers["tcp://gpu"], "compute-task")[0]["resources"] == {"GPU": 1}
    assert state.no_worker_reasons == {} and not state.unrunnable
    assert [t[1:3] for t in recorder.transitions if t[0] == "train"] == [
        ("released", "waiting"),
        ("waiting", "no-worker"),
        ("no-worker", "processing"),
    ]


def test_a_worker_with_too_little_of_a_resource_is_not_chosen(state):
    state.add_worker("tcp://small", "small", 8, "add-small", {"MEM": 1e9})
    state.add_worker("tcp://big", "big", 1, "add-big", {"MEM": 10e9})
    effects = submit(state, *(with_options(f"t{i}", resources={"MEM": 5e9}) for i in range(3)))
    assert computed_keys(effects, "tcp://big") == ["t0", "t1", "t2"]
    assert computed_keys(effects, "tcp://small") == []


def test_the_scheduler_places_by_totals_and_leaves_the_sharing_to_the_worker(state):
    state.add_worker("tcp://gpu", "gpu", 4, "add-gpu", {"GPU": 1})
    effects = submit(state, *(with_options(f"t{i}", resources={"GPU": 1}) for i in range(3)))
    assert computed_keys(effects, "tcp://gpu") == ["t0", "t1", "t2"]


def test_strict_restrictions_wait_but_loose_ones_fall_back_to_any_worker(state):
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    effects = submit(
        state,
        with_options("strict", ("tcp://gone",)),
        with_options("loose", ("tcp://gone",), loose=True),
    )
    assert state.tasks["strict"].state == "no-worker"
    assert "restricted to workers ['tcp://gone']" in state.no_worker_reasons["strict"]
    assert computed_keys(effects, "tcp://w1") == ["loose"]


def test_loose_restrictions_prefer_the_named_worker(state):
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    state.add_worker("tcp://w2", "w2", 1, "add-w2")
    effects = submit(state, *(with_options(f"t{i}", ("w2",), loose=True) for i in range(3)))
    assert computed_keys(effects, "tcp://w2") == ["t0", "t1", "t2"]


def test_loose_restrictions_still_need_the_resources(state):
    state.add_worker("tcp://named", "named", 1, "add-named")
    state.add_worker("tcp://gpu", "gpu", 1, "add-gpu", {"GPU": 1})
    effects = submit(state, with_options("t", ("named",), loose=True, resources={"GPU": 1}))
    assert computed_keys(effects, "tcp://gpu") == ["t"]


def test_a_task_goes_back_to_no_worker_when_the_only_worker_with_resources_leaves(state):
    state.add_worker("tcp://gpu", "gpu", 1, "add-gpu", {"GPU": 1})
    state.add_worker("tcp://cpu", "cpu", 1, "add-cpu")
    submit(state, with_options("t", resources={"GPU": 1}))
    assert state.tasks["t"].processing_on == "tcp://gpu"
    state.remove_worker("tcp://gpu", "gone", expected=True)
    assert state.tasks["t"].state == "no-worker"


def test_user_priority_and_order_reach_the_worker(state):
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    effects = submit(state, spec("plain"), with_options("urgent", priority=10))
    plain, urgent = ops(effects.workers["tcp://w1"], "compute-task")
    assert "user_priority" not in plain and "resources" not in plain
    assert urgent["user_priority"] == 10
    assert plain["priority"] < urgent["priority"]  # call order breaks ties after the user's


def test_graphs_within_fifo_timeout_share_a_generation_and_restart_their_order(state):
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    update = state.update_graph
    update(CLIENT, [spec("a0"), spec("a1")], FUNCTIONS, [], "g1", now=10.0, fifo_timeout=0.1)
    update(CLIENT, [spec("b0")], FUNCTIONS, [], "g2", now=10.05, fifo_timeout=0.1)
    update(CLIENT, [spec("c0")], FUNCTIONS, [], "g3", now=10.2, fifo_timeout=0.1)
    priority = {key: ts.priority for key, ts in state.tasks.items()}
    assert priority["a0"] == priority["b0"] < priority["a1"] < priority["c0"]
    assert priority["c0"] - priority["a0"] == GENERATION_SPAN


def test_a_zero_fifo_timeout_makes_each_later_graph_a_new_generation(state):
    update = state.update_graph
    update(CLIENT, [spec("a0"), spec("a1")], FUNCTIONS, [], "g1", now=10.0, fifo_timeout=0)
    update(CLIENT, [spec("b0")], FUNCTIONS, [], "g2", now=10.001, fifo_timeout=0)
    assert state.tasks["a1"].priority < state.tasks["b0"].priority


def test_each_call_in_one_message_restarts_its_order(state):
    tasks = [spec("m0"), spec("m1"), spec("m2"), spec("s0")]
    state.update_graph(CLIENT, tasks, FUNCTIONS, [], "g", now=1.0, calls=[3, 1])
    order = [state.tasks[k].priority - state.tasks["m0"].priority for k in ("m1", "m2", "s0")]
    assert order == [1, 2, 0]


def test_six_element_entries_from_older_clients_still_work(state):
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    effects = submit(state, TaskSpec(*["old", "f-inc", b"args", [], 0, None]))
    assert computed_keys(effects, "tcp://w1") == ["old"]
    finish(state, "old", "tcp://w1")
    assert state.tasks["old"].state == "memory"


@pytest.mark.parametrize(
    "options",
    [
        "urgent",
        {"priority": "high"},
        {"priority": True},
        {"resources": ["GPU"]},
        {"resources": {"GPU": "one"}},
        {"resources": {"GPU": -1}},
        {"loose": "yes"},
        {"colour": "red"},
    ],
)
def test_malformed_options_reject_the_graph_and_change_nothing(state, options):
    bad = TaskSpec("bad", "f-inc", b"args", (), 0, None, options)
    with pytest.raises(ValueError, match="task 'bad'"):
        submit(state, spec("fine"), bad)
    assert state.tasks == {}


@pytest.mark.parametrize("calls", [[1], [2, "1"], [-1, 3]])
def test_calls_that_do_not_match_the_tasks_reject_the_graph(state, calls):
    with pytest.raises(ValueError, match="calls"):
        state.update_graph(CLIENT, [spec("a"), spec("b")], FUNCTIONS, [], "g", calls=calls)
    assert state.tasks == {}


def test_worker_identity_shows_its_resources(state):
    state.add_worker("tcp://gpu", "gpu", 1, "add-gpu", {"GPU": 2})
    assert state.workers["tcp://gpu"].identity()["resources"] == {"GPU": 2}


def test_plugins_hear_why_a_task_has_no_worker(recorder):
    heard: list[tuple[str, str, str, dict[str, Any]]] = []
    state = SchedulerState(
        recorder, on_transition=lambda k, a, b, s, info: heard.append((k, a, b, info))
    )
    submit(state, with_options("t", ("tcp://w9",)))
    assert heard[-1] == ("t", "waiting", "no-worker", {"reason": "no workers"})
    state.add_worker("tcp://w2", "w2", 1, "add-w2")
    submit(state, with_options("u", ("tcp://w9",), resources={"GPU": 1}))
    reason = "restricted to workers ['tcp://w9'] and needs resources {'GPU': 1}"
    assert heard[-1] == (
        "u",
        "waiting",
        "no-worker",
        {"reason": f"{reason}: no worker here qualifies"},
    )
