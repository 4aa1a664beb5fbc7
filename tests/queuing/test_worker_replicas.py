"""The worker tells the scheduler of every copy it acquires or drops (no sockets)."""

from __future__ import annotations

import pytest

from storied.worker.state import GatherDep, WorkerState
from tests.worker.test_state import compute, forgotten, sent, succeed


@pytest.fixture
def state(recorder) -> WorkerState:
    return WorkerState(nthreads=1, recorder=recorder)


def reported(instructions, op: str) -> list[str]:
    return [key for msg in sent(instructions, op) for key in msg["keys"]]


def test_a_fetched_input_is_reported_when_it_arrives_and_when_it_goes(state):
    compute(state, "b", who_has={"a": ["tcp://w1"]})
    arrived = state.gather_success("tcp://w1", ["a"], "got-a")
    assert reported(arrived, "add-keys") == ["a"]
    done = succeed(state, "b")
    assert forgotten(done) == ["a"]
    assert reported(done, "release-worker-data") == ["a"]
    assert "a" not in state.tasks


def test_data_the_scheduler_frees_is_not_reported_back(state):
    compute(state, "a")
    succeed(state, "a")
    assert reported(state.free_keys(["a"], "free"), "release-worker-data") == []


def test_an_input_dropped_with_its_rescheduled_dependent_is_reported(state):
    compute(state, "c", who_has={"a": ["tcp://w1"], "b": ["tcp://w2"]})
    state.gather_success("tcp://w1", ["a"], "got-a")
    instructions = state.free_keys(["c"], "free-c")
    assert reported(instructions, "release-worker-data") == ["a"]


def test_acquired_replicas_stay_until_freed(state):
    instructions = state.acquire_replicas({"a": ["tcp://w1"], "b": []}, "replicate")
    assert instructions == [GatherDep("tcp://w1", ("a",), "replicate")]
    assert "b" not in state.tasks
    arrived = state.gather_success("tcp://w1", ["a"], "got-a")
    assert reported(arrived, "add-keys") == ["a"]
    assert state.tasks["a"].state == "memory"
    assert forgotten(state.free_keys(["a"], "free")) == ["a"]


def test_a_replica_that_cannot_be_fetched_is_let_go(state):
    state.acquire_replicas({"a": ["tcp://w1"]}, "replicate")
    instructions = state.gather_failure("tcp://w1", ["a"], "gone")
    assert [m["key"] for m in sent(instructions, "missing-data")] == ["a"]
    assert "a" not in state.tasks
