"""SchedulerState stimuli for fire-and-forget, retry, the task spec that
``recreate_error_locally`` runs, and a client wanting a released key again."""

from __future__ import annotations

import pytest

from storied.scheduler.state import FIRE_AND_FORGET, SchedulerState
from tests.scheduler.test_state import (
    CLIENT,
    FUNCTIONS,
    computed_keys,
    error_of,
    finish,
    ops,
    spec,
    submit,
)


@pytest.fixture
def one_worker(recorder) -> SchedulerState:
    state = SchedulerState(recorder)
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    return state


def test_a_fired_task_released_by_its_client_still_runs_then_is_forgotten(one_worker, recorder):
    submit(one_worker, spec("a"))
    one_worker.fire_and_forget(["a"], "fire")
    one_worker.client_releases_keys(CLIENT, ["a"], "release")
    assert one_worker.tasks["a"].state == "processing"
    assert one_worker.tasks["a"].who_wants == {FIRE_AND_FORGET}
    effects = finish(one_worker, "a", "tcp://w1")
    assert "a" not in one_worker.tasks
    assert recorder.path("a")[-3:] == ["memory", "released", "forgotten"]
    assert not effects.clients


def test_a_fired_task_that_errs_is_forgotten_too(one_worker):
    submit(one_worker, spec("a"))
    one_worker.fire_and_forget(["a"], "fire")
    one_worker.client_releases_keys(CLIENT, ["a"], "release")
    one_worker.task_erred("tcp://w1", "a", error_of("boom"), "erred")
    assert "a" not in one_worker.tasks


def test_a_fired_task_a_client_still_wants_stays_in_memory(one_worker):
    submit(one_worker, spec("a"))
    one_worker.fire_and_forget(["a"], "fire")
    effects = finish(one_worker, "a", "tcp://w1")
    assert one_worker.tasks["a"].state == "memory"
    assert one_worker.tasks["a"].who_wants == {CLIENT}
    assert [m["key"] for m in ops(effects.clients[CLIENT], "key-in-memory")] == ["a"]


def test_retry_reruns_the_erred_root_and_its_blamed_dependents(one_worker, recorder):
    submit(one_worker, spec("a"), spec("b", "a"), wanted=["b"])
    one_worker.task_erred("tcp://w1", "a", error_of("boom"), "erred")
    assert one_worker.tasks["b"].state == "erred"
    effects, retried = one_worker.retry(CLIENT, ["b"], "retry-1")
    assert sorted(retried) == ["a", "b"]
    assert computed_keys(effects, "tcp://w1") == ["a"]
    assert one_worker.tasks["b"].state == "waiting"
    assert ("b", "erred", "released", {"b": "waiting"}, "retry-1", None) in recorder.transitions
    finish(one_worker, "a", "tcp://w1")
    assert one_worker.tasks["b"].state == "processing"


def test_retry_of_keys_not_erred_reports_them_as_they_stand(one_worker):
    submit(one_worker, spec("a"))
    finish(one_worker, "a", "tcp://w1")
    effects, retried = one_worker.retry(CLIENT, ["a", "unknown"], "retry")
    assert retried == []
    assert [m["key"] for m in ops(effects.clients[CLIENT], "key-in-memory")] == ["a"]
    assert [m["key"] for m in ops(effects.clients[CLIENT], "lost-key")] == ["unknown"]


def test_task_spec_gives_function_args_and_dependencies(one_worker):
    submit(one_worker, spec("a"), spec("b", "a", function_id="f-add"))
    assert one_worker.task_spec("b") == {
        "key": "b",
        "function": FUNCTIONS["f-add"],
        "args": b"args of b",
        "dependencies": ["a"],
    }
    with pytest.raises(KeyError, match="no task 'zzz'"):
        one_worker.task_spec("zzz")


def test_a_client_wanting_a_released_input_again_has_it_computed(one_worker):
    submit(one_worker, spec("a"), spec("b", "a"), wanted=["b"])
    finish(one_worker, "a", "tcp://w1")
    finish(one_worker, "b", "tcp://w1")
    assert one_worker.tasks["a"].state == "released"  # kept only as b's input
    effects = one_worker.client_desires_keys("client-2", ["a"], "desire")
    assert computed_keys(effects, "tcp://w1") == ["a"]
    assert "client-2" in one_worker.tasks["a"].who_wants
