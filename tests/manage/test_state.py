"""The pure side of cluster management: which data must leave retiring workers, and a restart
that forgets every task."""

from __future__ import annotations

import pytest

from storied.scheduler.state import SchedulerState, TaskSpec

CLIENT = "client-1"
FUNCTIONS = {"f-inc": b"pickled inc"}


def _state(recorder, *workers: str) -> SchedulerState:
    state = SchedulerState(recorder)
    for address in workers:
        state.add_worker(address, address.removeprefix("tcp://"), 1, f"add-{address}")
    return state


def _compute(state: SchedulerState, key: str, *deps: str, on: str | None = None) -> str:
    """Submit ``key`` (only on worker ``on``, if given) and finish it; where it ran."""
    spec = TaskSpec(key, "f-inc", f"args of {key}".encode(), deps, 0, [on] if on else None)
    state.update_graph(CLIENT, [spec], FUNCTIONS, [key], f"submit-{key}")
    worker = state.tasks[key].processing_on
    assert worker is not None
    state.task_finished(worker, key, 100, "builtins.int", f"done-{key}")
    return worker


def test_only_data_held_nowhere_else_moves_spread_over_the_remaining(recorder):
    state = _state(recorder, "tcp://a", "tcp://b", "tcp://c")
    for key in ("w", "x", "y", "z"):
        assert _compute(state, key, on="tcp://a") == "tcp://a"
    state.add_replicas("tcp://b", ["y"], "moved")  # y has a copy elsewhere: it stays
    plan = state.retirement_plan(["tcp://a"])
    moved = {key: target for target, keys in plan.items() for key in keys}
    assert sorted(moved) == ["w", "x", "z"]
    assert all(keys[key] == ["tcp://a"] for keys in plan.values() for key in keys)
    # the least loaded in bytes first: c (empty) takes w, then b and c hold 100 each
    assert moved["w"] == "tcp://c"  # b already holds y's 100 bytes
    assert sorted(moved.values()) == ["tcp://b", "tcp://c", "tcp://c"]


def test_data_held_only_among_the_retiring_moves_once(recorder):
    state = _state(recorder, "tcp://a", "tcp://b", "tcp://c")
    worker = _compute(state, "x")
    for other in ("tcp://a", "tcp://b"):
        state.add_replicas(other, ["x"], "moved")
    assert worker in ("tcp://a", "tcp://b", "tcp://c")
    state.tasks["x"].who_has.discard("tcp://c")
    state.workers["tcp://c"].has_what.discard(state.tasks["x"])
    plan = state.retirement_plan(["tcp://a", "tcp://b"])
    assert plan == {"tcp://c": {"x": ["tcp://a", "tcp://b"]}}


def test_retiring_every_holder_with_no_worker_left_is_refused(recorder):
    state = _state(recorder, "tcp://a")
    _compute(state, "x")
    with pytest.raises(ValueError, match="no other worker would remain"):
        state.retirement_plan(["tcp://a"])
    assert state.retirement_plan([]) == {}


def test_add_replicas_only_for_tasks_in_memory_and_known_workers(recorder):
    state = _state(recorder, "tcp://a", "tcp://b")
    _compute(state, "x")
    state.add_replicas("tcp://b", ["x", "unknown"], "moved")
    state.add_replicas("tcp://gone", ["x"], "moved")
    assert state.tasks["x"].who_has == {"tcp://a", "tcp://b"}
    assert {ts.key for ts in state.workers["tcp://b"].has_what} == {"x"}


def test_release_all_forgets_every_task_and_tells_every_client(recorder):
    state = _state(recorder, "tcp://a")
    state.add_client(CLIENT)
    state.add_client("client-2")
    _compute(state, "x")
    spec = TaskSpec("y", "f-inc", b"args of y", ("x",))
    state.update_graph(CLIENT, [spec], FUNCTIONS, ["y"], "submit-y")  # processing on a
    waiting = TaskSpec("z", "f-inc", b"args of z", ("y",))
    state.update_graph("client-2", [waiting], FUNCTIONS, ["z"], "submit-z")
    effects = state.release_all("restart-1")
    assert state.tasks == {}
    assert not state.unrunnable
    assert not state.workers["tcp://a"].processing
    assert not state.workers["tcp://a"].has_what
    for client in (CLIENT, "client-2"):
        assert {"op": "restarted"} in effects.clients[client]
    for key in ("x", "y", "z"):
        assert recorder.path(key)[-1] == "forgotten"
