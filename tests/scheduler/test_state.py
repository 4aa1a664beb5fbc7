"""SchedulerState driven by hand: stimuli in, Effects and recorded transitions out. No sockets."""

from __future__ import annotations

from typing import Any

import pytest

from storied.exceptions import KilledWorker
from storied.protocol.serialize import pickle_dumps, pickle_loads
from storied.scheduler.state import Effects, SchedulerState, TaskSpec

CLIENT = "client-1"
FUNCTIONS = {"f-inc": b"pickled inc", "f-add": b"pickled add"}


def spec(
    key: str,
    *deps: str,
    function_id: str = "f-inc",
    retries: int = 0,
    restrictions: tuple[str, ...] | None = None,
) -> TaskSpec:
    return TaskSpec(key, function_id, f"args of {key}".encode(), deps, retries, restrictions)


def submit(
    state: SchedulerState,
    *specs: TaskSpec,
    wanted: list[str] | None = None,
    client: str = CLIENT,
    stimulus_id: str = "update-graph-1",
) -> Effects:
    if wanted is None:
        wanted = [s.key for s in specs]
    return state.update_graph(client, specs, FUNCTIONS, wanted, stimulus_id)


def ops(msgs: list[dict[str, Any]], op: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["op"] == op]


def computed_keys(effects: Effects, worker: str) -> list[str]:
    return [m["key"] for m in ops(effects.workers[worker], "compute-task")]


def freed_keys(effects: Effects, worker: str) -> list[str]:
    return [k for m in ops(effects.workers[worker], "free-keys") for k in m["keys"]]


def finish(state: SchedulerState, key: str, worker: str, stimulus_id: str = "done") -> Effects:
    return state.task_finished(worker, key, 8, "builtins.int", stimulus_id)


def error_of(text: str) -> dict[str, Any]:
    return {
        "exception": pickle_dumps(ZeroDivisionError(text)),
        "traceback": None,
        "text": f"ZeroDivisionError: {text}",
    }


def test_one_task_tells_the_seed_story(one_worker, recorder):
    effects = submit(one_worker, spec("inc-1"), stimulus_id="graph")
    [msg] = effects.workers["tcp://w1"]
    assert msg["op"] == "compute-task" and msg["key"] == "inc-1"
    assert msg["function"] == FUNCTIONS["f-inc"]
    assert msg["args"] == b"args of inc-1"
    assert "who_has" not in msg
    assert not effects.clients

    effects = finish(one_worker, "inc-1", "tcp://w1", "finished")
    assert effects.clients[CLIENT] == [
        {"op": "key-in-memory", "key": "inc-1", "type": "builtins.int", "workers": ["tcp://w1"]}
    ]
    assert recorder.transitions == [
        ("inc-1", "released", "waiting", {"inc-1": "processing"}, "graph", None),
        ("inc-1", "waiting", "processing", {}, "graph", "tcp://w1"),
        ("inc-1", "processing", "memory", {}, "finished", "tcp://w1"),
    ]
    assert one_worker.tasks["inc-1"].who_has == {"tcp://w1"}


def test_a_task_waits_for_its_inputs_and_is_told_who_has_them(one_worker, recorder):
    effects = submit(one_worker, spec("a"), spec("b", "a", function_id="f-add"), wanted=["b"])
    assert computed_keys(effects, "tcp://w1") == ["a"]
    assert one_worker.tasks["b"].state == "waiting"

    effects = finish(one_worker, "a", "tcp://w1")
    [msg] = effects.workers["tcp://w1"]
    assert msg["key"] == "b"
    assert msg["who_has"] == {"a": ["tcp://w1"]}
    assert msg["function"] == FUNCTIONS["f-add"]
    assert not effects.clients, "nobody asked for a"

    effects = finish(one_worker, "b", "tcp://w1")
    assert freed_keys(effects, "tcp://w1") == ["a"], "a is no longer needed once b is done"
    assert recorder.path("a")[-2:] == ["memory", "released"]
    assert ops(effects.clients[CLIENT], "key-in-memory")[0]["key"] == "b"


def test_dependencies_submitted_in_any_order(one_worker):
    effects = submit(one_worker, spec("b", "a"), spec("a"), wanted=["b"])
    assert computed_keys(effects, "tcp://w1") == ["a"]


def test_the_same_key_submitted_twice_is_one_task(one_worker, recorder):
    first = submit(one_worker, spec("inc-1"))
    second = submit(one_worker, spec("inc-1"), stimulus_id="update-graph-2")
    assert computed_keys(first, "tcp://w1") == ["inc-1"]
    assert not second.workers
    assert recorder.path("inc-1") == ["released", "waiting", "processing"]

    finish(one_worker, "inc-1", "tcp://w1")
    third = submit(one_worker, spec("inc-1"), client="client-2")
    assert not third.workers
    assert ops(third.clients["client-2"], "key-in-memory")[0]["key"] == "inc-1"


def test_client_release_forgets_the_task_and_frees_the_worker(one_worker, recorder):
    submit(one_worker, spec("inc-1"))
    finish(one_worker, "inc-1", "tcp://w1")
    effects = one_worker.client_releases_keys(CLIENT, ["inc-1"], "release")
    assert freed_keys(effects, "tcp://w1") == ["inc-1"]
    assert "inc-1" not in one_worker.tasks
    assert recorder.path("inc-1")[-3:] == ["memory", "released", "forgotten"]
    assert not one_worker.workers["tcp://w1"].has_what


def test_a_key_another_client_wants_is_kept(one_worker):
    submit(one_worker, spec("inc-1"))
    submit(one_worker, spec("inc-1"), client="client-2")
    finish(one_worker, "inc-1", "tcp://w1")
    effects = one_worker.client_releases_keys(CLIENT, ["inc-1"], "release")
    assert not effects.workers
    assert one_worker.tasks["inc-1"].state == "memory"


def test_an_error_is_blamed_on_dependents(one_worker, recorder):
    submit(one_worker, spec("a"), spec("b", "a"), spec("c", "b"), wanted=["a", "c"])
    effects = one_worker.task_erred("tcp://w1", "a", error_of("boom"), "erred")
    erred = {m["key"]: m for m in ops(effects.clients[CLIENT], "task-erred")}
    assert set(erred) == {"a", "c"}, "the client hears about the keys it wants"
    assert erred["a"]["text"] == "ZeroDivisionError: boom"
    assert erred["c"]["blame"] == "a"
    assert isinstance(pickle_loads(erred["c"]["exception"]), ZeroDivisionError)
    assert {one_worker.tasks[k].state for k in "abc"} == {"erred"}
    assert recorder.path("b") == ["released", "waiting", "erred"]
    assert not effects.workers


def test_a_task_submitted_after_its_input_erred_errs_at_once(one_worker):
    submit(one_worker, spec("a"))
    one_worker.task_erred("tcp://w1", "a", error_of("boom"), "erred")
    effects = submit(one_worker, spec("b", "a"))
    [msg] = ops(effects.clients[CLIENT], "task-erred")
    assert msg["key"] == "b" and msg["blame"] == "a"
    assert not effects.workers


def test_releasing_an_erred_task_frees_it_on_the_worker_where_it_failed(one_worker):
    submit(one_worker, spec("a"))
    one_worker.task_erred("tcp://w1", "a", error_of("boom"), "erred")
    effects = one_worker.client_releases_keys(CLIENT, ["a"], "release")
    assert "a" not in one_worker.tasks
    assert freed_keys(effects, "tcp://w1") == ["a"], (
        "the worker still holds a in its error state and would ignore a later compute-task"
    )


def test_retries_rerun_a_failing_task_then_give_up(one_worker, recorder):
    submit(one_worker, spec("flaky", retries=2))
    for attempt in (1, 2):
        effects = one_worker.task_erred("tcp://w1", "flaky", error_of("try"), f"erred-{attempt}")
        assert computed_keys(effects, "tcp://w1") == ["flaky"], f"attempt {attempt} retried"
        assert not effects.clients
    effects = one_worker.task_erred("tcp://w1", "flaky", error_of("last"), "erred-3")
    assert not effects.workers
    [msg] = ops(effects.clients[CLIENT], "task-erred")
    assert msg["text"] == "ZeroDivisionError: last"
    assert recorder.path("flaky").count("processing") == 3


def test_retries_then_success(one_worker):
    submit(one_worker, spec("flaky", retries=1))
    one_worker.task_erred("tcp://w1", "flaky", error_of("try"), "erred")
    effects = finish(one_worker, "flaky", "tcp://w1")
    assert ops(effects.clients[CLIENT], "key-in-memory")


def test_no_worker_then_a_worker_joins(state, recorder):
    effects = submit(state, spec("inc-1"))
    assert not effects.workers
    assert state.tasks["inc-1"].state == "no-worker"
    effects = state.add_worker("tcp://w1", "w1", 2, "add-w1")
    assert computed_keys(effects, "tcp://w1") == ["inc-1"]
    assert recorder.path("inc-1") == ["released", "waiting", "no-worker", "processing"]
    assert not state.unrunnable


def test_tasks_spread_over_the_least_busy_workers(two_workers):
    effects = submit(two_workers, spec("a"), spec("b"))
    assert computed_keys(effects, "tcp://w1") + computed_keys(effects, "tcp://w2") == ["a", "b"]
    assert len(effects.workers) == 2


def test_a_departing_worker_s_processing_task_moves(two_workers, recorder):
    effects = submit(two_workers, spec("a"))
    [(worker, _)] = effects.workers.items()
    other = ({"tcp://w1", "tcp://w2"} - {worker}).pop()
    effects = two_workers.remove_worker(worker, "worker-left", expected=True)
    assert computed_keys(effects, other) == ["a"]
    assert recorder.path("a")[-4:] == ["processing", "released", "waiting", "processing"]
    assert two_workers.tasks["a"].suspicious == 0, "a clean departure suspects nobody"


def test_data_held_only_by_a_lost_worker_is_recomputed(two_workers):
    submit(two_workers, spec("a"))
    holder = two_workers.tasks["a"].processing_on
    finish(two_workers, "a", holder)
    other = ({"tcp://w1", "tcp://w2"} - {holder}).pop()
    effects = two_workers.remove_worker(holder, "worker-lost", expected=False)
    assert ops(effects.clients[CLIENT], "lost-data") == [{"op": "lost-data", "key": "a"}]
    assert computed_keys(effects, other) == ["a"]
    assert not effects.workers.get(holder), "nothing is sent to a gone worker"


def test_data_with_another_replica_survives_a_lost_worker(two_workers):
    submit(two_workers, spec("a"))
    holder = two_workers.tasks["a"].processing_on
    finish(two_workers, "a", holder)
    other = ({"tcp://w1", "tcp://w2"} - {holder}).pop()
    two_workers.task_finished(other, "a", 8, "builtins.int", "replica")
    effects = two_workers.remove_worker(holder, "worker-lost", expected=False)
    assert not effects.workers and not effects.clients
    assert two_workers.tasks["a"].who_has == {other}


def test_a_lost_worker_s_tasks_split_as_dask_splits_them(two_workers):
    """Running, computed and held alone, scattered and held alone; a replicated result is
    not lost."""
    submit(two_workers, spec("computed"), spec("replicated"))
    holder = two_workers.tasks["computed"].processing_on
    finish(two_workers, "computed", holder)
    other = ({"tcp://w1", "tcp://w2"} - {holder}).pop()
    replicated_on = two_workers.tasks["replicated"].processing_on
    finish(two_workers, "replicated", replicated_on)
    two_workers.task_finished(
        ({"tcp://w1", "tcp://w2"} - {replicated_on}).pop(), "replicated", 8, "int", "copy"
    )
    two_workers.update_data(CLIENT, {"scattered": [holder]}, {"scattered": 8}, {}, "scatter")
    submit(two_workers, spec("running", restrictions=(holder,)))
    assert two_workers.lost_tasks(holder) == {
        "processing-tasks": ["running"],
        "lost-computed-tasks": ["computed"],
        "lost-scattered-tasks": ["scattered"],
    }
    assert two_workers.lost_tasks(other)["lost-computed-tasks"] == []
    assert two_workers.lost_tasks("tcp://nobody") == {
        "processing-tasks": [],
        "lost-computed-tasks": [],
        "lost-scattered-tasks": [],
    }


def test_killed_worker_after_allowed_failures_deaths(state):
    """allowed_failures=1: the task may be on one dying worker and survive, not on two."""
    for name in ("w1", "w2", "w3"):
        state.add_worker(f"tcp://{name}", name, 1, f"add-{name}")
    submit(state, spec("bomb"))
    first = state.tasks["bomb"].processing_on
    state.remove_worker(first, "worker-lost", expected=False)
    second = state.tasks["bomb"].processing_on
    assert second not in (None, first)
    effects = state.remove_worker(second, "worker-lost", expected=False)
    assert state.tasks["bomb"].state == "erred"
    [msg] = ops(effects.clients[CLIENT], "task-erred")
    exc = pickle_loads(msg["exception"])
    assert isinstance(exc, KilledWorker)
    assert exc.key == "bomb" and exc.last_worker == second


def test_function_bytes_go_to_each_worker_once(two_workers):
    effects = submit(two_workers, *(spec(f"inc-{i}") for i in range(4)))
    for worker in ("tcp://w1", "tcp://w2"):
        msgs = ops(effects.workers[worker], "compute-task")
        assert len(msgs) == 2
        assert [("function" in m) for m in msgs] == [True, False]
    effects = submit(two_workers, spec("inc-9"), stimulus_id="later")
    [msg] = [m for msgs in effects.workers.values() for m in msgs]
    assert "function" not in msg


def test_function_bytes_are_sent_again_after_the_function_was_forgotten(one_worker):
    submit(one_worker, spec("inc-1"))
    finish(one_worker, "inc-1", "tcp://w1")
    one_worker.client_releases_keys(CLIENT, ["inc-1"], "release")
    assert "f-inc" not in one_worker.functions
    effects = submit(one_worker, spec("inc-2"))
    [msg] = effects.workers["tcp://w1"]
    assert msg["function"] == FUNCTIONS["f-inc"]


def test_an_unknown_function_is_refused(one_worker):
    bad = TaskSpec("x", "f-missing", b"", ())
    with pytest.raises(ValueError, match="unknown function"):
        one_worker.update_graph(CLIENT, [bad], {}, ["x"], "graph")


def test_restrictions_by_address_and_by_name(two_workers):
    two_workers.add_worker("tcp://w3", "w3", 1, "add-w3")
    effects = submit(
        two_workers, spec("a", restrictions=("tcp://w2",)), spec("b", restrictions=("w2",))
    )
    assert computed_keys(effects, "tcp://w2") == ["a", "b"]


def test_restricted_to_an_absent_worker_waits_for_it(one_worker, recorder):
    submit(one_worker, spec("a", restrictions=("gpu-box",)))
    assert one_worker.tasks["a"].state == "no-worker"
    recorded = len(recorder.transitions)
    effects = one_worker.add_worker("tcp://w2", "w2", 1, "add-w2")
    assert not effects.workers
    assert len(recorder.transitions) == recorded, "nothing happened to a, so nothing is recorded"
    effects = one_worker.add_worker("tcp://w9", "gpu-box", 1, "add-w9")
    assert computed_keys(effects, "tcp://w9") == ["a"]


def test_missing_data_drops_a_replica_and_recomputes_the_last(two_workers):
    submit(two_workers, spec("a"))
    finish(two_workers, "a", "tcp://w1")
    two_workers.task_finished("tcp://w2", "a", 8, "builtins.int", "replica")
    effects = two_workers.missing_data("a", "tcp://w1", "missing-1")
    assert two_workers.tasks["a"].who_has == {"tcp://w2"}
    assert not effects.workers and not effects.clients
    effects = two_workers.missing_data("a", "tcp://w2", "missing-2")
    assert ops(effects.clients[CLIENT], "lost-data")
    assert [k for w in effects.workers for k in computed_keys(effects, w)] == ["a"]


def test_reschedule_from_the_worker_running_the_task(two_workers, recorder):
    submit(two_workers, spec("a"))
    worker = two_workers.tasks["a"].processing_on
    other = ({"tcp://w1", "tcp://w2"} - {worker}).pop()
    assert not two_workers.reschedule("a", other, "stale").workers
    assert two_workers.tasks["a"].processing_on == worker, "only the assignee may give it back"
    effects = two_workers.reschedule("a", worker, "reschedule")
    assert len(computed_keys(effects, "tcp://w1") + computed_keys(effects, "tcp://w2")) == 1
    assert recorder.path("a")[-3:] == ["released", "waiting", "processing"]


def test_cancel_stops_the_computation(one_worker):
    submit(one_worker, spec("a"))
    effects = one_worker.cancel(CLIENT, ["a"], "cancel")
    assert freed_keys(effects, "tcp://w1") == ["a"]
    assert effects.clients[CLIENT] == [
        {"op": "cancelled-keys", "keys": ["a"], "dependents": [], "stimulus_id": "cancel"}
    ]
    assert "a" not in one_worker.tasks
    assert not one_worker.workers["tcp://w1"].processing


def test_cancel_keeps_what_another_client_still_wants(one_worker):
    submit(one_worker, spec("a"))
    submit(one_worker, spec("a"), client="client-2")
    effects = one_worker.cancel(CLIENT, ["a"], "cancel")
    assert not effects.workers
    assert one_worker.tasks["a"].state == "processing"


def test_a_result_from_a_worker_that_no_longer_runs_the_task_is_freed(two_workers):
    submit(two_workers, spec("a"))
    worker = two_workers.tasks["a"].processing_on
    other = ({"tcp://w1", "tcp://w2"} - {worker}).pop()
    effects = two_workers.task_finished(other, "a", 8, "builtins.int", "stale")
    assert freed_keys(effects, other) == ["a"]
    assert two_workers.tasks["a"].state == "processing"


def test_scattered_data_lost_with_its_worker_is_reported_lost(one_worker):
    one_worker.update_data(CLIENT, {"x": ["tcp://w1"]}, {"x": 8}, {"x": "builtins.int"}, "scatter")
    assert one_worker.tasks["x"].state == "memory"
    effects = one_worker.remove_worker("tcp://w1", "worker-lost", expected=False)
    assert ops(effects.clients[CLIENT], "lost-key") == [{"op": "lost-key", "key": "x"}]
    assert "x" not in one_worker.tasks


def test_removing_a_client_releases_everything_it_wanted(one_worker):
    submit(one_worker, spec("a"), spec("b"))
    finish(one_worker, "a", "tcp://w1")
    effects = one_worker.remove_client(CLIENT, "client-left")
    assert freed_keys(effects, "tcp://w1") == ["a", "b"]
    assert not one_worker.tasks


def test_a_graph_naming_an_unknown_function_changes_nothing(one_worker, recorder):
    with pytest.raises(ValueError, match="unknown function"):
        one_worker.update_graph(
            CLIENT, [spec("a"), spec("b", function_id="f-missing")], {}, ["a", "b"], "bad-graph"
        )
    assert one_worker.tasks == {} and recorder.transitions == []


def test_an_input_nobody_can_compute_errs_its_dependent(one_worker):
    effects = submit(one_worker, spec("b", "gone"), wanted=["b"])
    assert one_worker.tasks["b"].state == "erred"
    (erred,) = ops(effects.clients[CLIENT], "task-erred")
    error = pickle_loads(erred["exception"])
    assert type(error).__name__ == "FutureLostError" and "'gone'" in str(error)
    assert "gone" not in one_worker.tasks or one_worker.tasks["gone"].state == "released"


def test_a_task_rescheduled_from_a_lost_worker_keeps_its_inputs(two_workers, recorder):
    """Its input has a copy on the surviving worker: that copy is used, not thrown away and
    recomputed (storied released the inputs of every rescheduled task; Dask keeps them)."""
    submit(two_workers, spec("a"), spec("b", "a"), wanted=["b"])
    holder = two_workers.tasks["a"].processing_on
    other = ({"tcp://w1", "tcp://w2"} - {holder}).pop()
    finish(two_workers, "a", holder)
    assert two_workers.tasks["b"].processing_on == holder
    two_workers.add_replicas(other, ["a"], "add-keys")
    effects = two_workers.remove_worker(holder, "worker-lost", expected=False)
    assert two_workers.tasks["a"].state == "memory"
    assert two_workers.tasks["a"].who_has == {other}
    assert computed_keys(effects, other) == ["b"]
    assert recorder.path("a") == ["released", "waiting", "processing", "memory"]
