"""Work stealing and worker statuses on the pure state machines, driven by hand (no sockets)."""

from __future__ import annotations

import math

import pytest

from storied.scheduler.state import Effects, SchedulerState, TaskSpec
from storied.scheduler.stealing import LATENCY, STEALING_TOPIC, UNKNOWN_DURATION, WorkStealing
from storied.worker.state import SendMessage, WorkerState
from tests.scheduler.test_state import CLIENT, computed_keys, finish, spec, submit

W1, W2, W3 = "tcp://w1", "tcp://w2", "tcp://w3"


@pytest.fixture
def state(recorder) -> SchedulerState:
    """No queuing, as ``worker-saturation: inf``: every task goes to a worker at once."""
    state = SchedulerState(recorder, allowed_failures=1)
    state.add_worker(W1, "w1", 1, "add-w1")
    return state


@pytest.fixture
def stealing(state) -> WorkStealing:
    return WorkStealing(state)


def events(effects: Effects) -> list[dict]:
    """The stealing events that ``effects`` puts on the record."""
    assert {topic for topic, _ in effects.events} <= {STEALING_TOPIC}
    return [msg for _, msg in effects.events]


def requests(outcome, worker: str) -> list[str]:
    return [m["key"] for m in outcome.workers[worker] if m["op"] == "steal-request"]


def backlog_on_w1(state: SchedulerState, n: int = 6) -> list[str]:
    """``n`` tasks all sent to w1 (the only worker then); w1 started the first."""
    keys = [f"t-{i}" for i in range(n)]
    submit(state, *(spec(k) for k in keys))
    state.task_started(W1, "t-0")
    return keys


def test_an_idle_worker_steals_the_tasks_a_busy_one_runs_last(state, stealing, recorder):
    backlog_on_w1(state)
    state.add_worker(W2, "w2", 1, "add-w2")
    outcome = stealing.balance()
    # w1 runs t-0, t-1 next: the two it would run last are asked for (the thief takes two
    # tasks a thread in a round) and nothing it started
    assert requests(outcome, W1) == ["t-5", "t-4"]
    assert [e["action"] for e in events(outcome)] == ["steal-request", "steal-request"]
    steal_id = events(outcome)[0]["stimulus_id"]
    assert events(outcome)[0] == {
        "action": "steal-request",
        "key": "t-5",
        "victim": W1,
        "thief": W2,
        "stimulus_id": steal_id,
    }
    # a second pass asks nothing more while the answers are out
    assert not stealing.balance().workers

    outcome = stealing.steal_response(W1, "t-5", "ready", steal_id)
    assert computed_keys(outcome, W2) == ["t-5"]
    assert state.tasks["t-5"].processing_on == W2
    assert state.tasks["t-5"] not in state.workers[W1].processing
    assert events(outcome)[0]["action"] == "steal-confirm"
    assert recorder.transitions[-1][1:5] == ("processing", "processing", {}, steal_id)
    assert recorder.transitions[-1][-1] == W2
    assert stealing.confirmed == 1


def test_a_task_that_started_on_the_victim_stays_there(state, stealing):
    backlog_on_w1(state)
    state.add_worker(W2, "w2", 1, "add-w2")
    outcome = stealing.balance()
    steal_id = events(outcome)[0]["stimulus_id"]
    outcome = stealing.steal_response(W1, "t-5", "executing", steal_id)
    assert not outcome.workers
    assert events(outcome)[0]["action"] == "steal-declined"
    assert state.tasks["t-5"].processing_on == W1
    assert "t-5" not in stealing.in_flight


def test_a_stale_or_forged_answer_changes_nothing(state, stealing):
    backlog_on_w1(state)
    state.add_worker(W2, "w2", 1, "add-w2")
    steal_id = events(stealing.balance())[0]["stimulus_id"]
    assert not events(stealing.steal_response(W1, "t-5", "ready", "steal-other"))
    assert not events(stealing.steal_response(W2, "t-5", "ready", steal_id))
    assert state.tasks["t-5"].processing_on == W1


def test_a_task_that_finished_meanwhile_is_left_alone(state, stealing):
    backlog_on_w1(state)
    state.add_worker(W2, "w2", 1, "add-w2")
    steal_id = events(stealing.balance())[0]["stimulus_id"]
    finish(state, "t-5", W1)
    outcome = stealing.steal_response(W1, "t-5", "memory", steal_id)
    assert events(outcome)[0]["action"] == "steal-stale"
    assert state.tasks["t-5"].state == "memory"


def test_given_back_to_a_thief_that_left_is_placed_again(state, stealing):
    backlog_on_w1(state)
    state.add_worker(W2, "w2", 1, "add-w2")
    steal_id = events(stealing.balance())[0]["stimulus_id"]
    state.remove_worker(W2, "gone", expected=True)
    outcome = stealing.steal_response(W1, "t-5", "ready", steal_id)
    assert events(outcome)[0]["action"] == "steal-reschedule"
    assert state.tasks["t-5"].processing_on == W1
    assert computed_keys(outcome, W1) == ["t-5"]


def test_no_steal_when_the_load_is_even(state, stealing):
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, *(spec(f"t-{i}") for i in range(4)))
    assert {len(ws.processing) for ws in state.workers.values()} == {2}
    assert not events(stealing.balance())


def test_moving_large_inputs_for_a_short_task_does_not_pay(state, stealing):
    """Dask's rule: the thief must finish before the victim is half-way through the task; a
    task of 10 ms whose 1 GB input sits on the victim stays."""
    submit(state, spec("big"))
    state.task_finished(W1, "big", 10**9, "bytes", "done", (0.0, 0.01))
    submit(state, *(spec(f"use-{i}", "big") for i in range(6)), stimulus_id="graph-2")
    state.task_started(W1, "use-0")
    state.add_worker(W2, "w2", 1, "add-w2")
    assert stealing.transfer_time(state.tasks["use-1"], state.workers[W2]) == pytest.approx(
        10**9 / stealing.bandwidth + LATENCY
    )
    assert not events(stealing.balance())
    # the same tasks taking a minute each are worth the move
    state.function_durations["f-inc"] = 60.0
    assert requests(stealing.balance(), W1)


def test_durations_come_from_the_tasks_function(state, stealing):
    submit(state, spec("a"), TaskSpec("b", "f-add", b"args", ()))
    assert stealing.expected_duration(state.tasks["a"]) == UNKNOWN_DURATION
    state.task_finished(W1, "a", 8, "int", "done", (1.0, 3.0))
    assert stealing.expected_duration(state.tasks["b"]) == 2.0  # all tasks' average
    state.task_finished(W1, "b", 8, "int", "done", (1.0, 1.5))
    assert state.function_durations == {"f-inc": 2.0, "f-add": 0.5}


def test_restrictions_bind_the_thief_unless_loose(state, stealing):
    state.add_worker(W2, "w2", 1, "add-w2")
    state.remove_worker(W2, "later", expected=True)
    strict = [spec(f"s-{i}", restrictions=("w1",)) for i in range(4)]
    loose = [
        spec(f"l-{i}", restrictions=("w1",))._replace(options={"loose": True}) for i in range(4)
    ]
    submit(state, *strict, *loose)
    state.task_started(W1, "s-0")
    state.add_worker(W2, "w2", 1, "add-w2")
    stolen = requests(stealing.balance(), W1)
    assert stolen and all(key.startswith("l-") for key in stolen)


def test_a_paused_worker_gets_no_new_tasks_and_its_waiting_tasks_are_stolen(state, stealing):
    state.add_worker(W2, "w2", 1, "add-w2")
    state.set_worker_status(W1, "paused", "pause-1")
    effects = submit(state, *(spec(f"t-{i}") for i in range(3)))
    assert computed_keys(effects, W1) == []
    assert computed_keys(effects, W2) == ["t-0", "t-1", "t-2"]
    # tasks it held when it paused may all go, even the next in line (it starts none)
    state.set_worker_status(W1, "running", "unpause-1")
    effects = submit(state, *(spec(f"u-{i}") for i in range(2)), stimulus_id="graph-2")
    assert computed_keys(effects, W1) == ["u-0", "u-1"]
    state.set_worker_status(W1, "paused", "pause-2")
    for key in ("t-0", "t-1", "t-2"):
        finish(state, key, W2)
    assert sorted(requests(stealing.balance(), W1)) == ["u-0", "u-1"]


def test_when_every_worker_is_paused_tasks_wait_with_a_reason(state):
    state.set_worker_status(W1, "paused", "pause-1")
    submit(state, spec("t"))
    assert state.tasks["t"].state == "no-worker"
    assert state.no_worker_reasons["t"] == "every worker is paused or retiring"
    effects = state.set_worker_status(W1, "running", "unpause-1")
    assert computed_keys(effects, W1) == ["t"]


def test_a_retiring_worker_takes_no_queued_task(recorder):
    state = SchedulerState(recorder, worker_saturation=1.0)
    state.add_worker(W1, "w1", 1, "add-w1")
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, *(spec(f"r-{i}") for i in range(6)))
    state.set_worker_status(W1, "closing_gracefully", "retire")
    [on_w1] = state.workers[W1].processing
    effects = finish(state, on_w1.key, W1)
    assert computed_keys(effects, W1) == []
    [on_w2] = state.workers[W2].processing
    effects = finish(state, on_w2.key, W2)
    assert len(computed_keys(effects, W2)) == 1


def test_a_bad_status_is_refused(state):
    with pytest.raises(ValueError, match="worker status must be one of"):
        state.set_worker_status(W1, "sleepy", "x")


def test_bad_cost_parameters_are_refused(state):
    with pytest.raises(ValueError, match="bandwidth"):
        WorkStealing(state, bandwidth=0)
    assert WorkStealing(state).load(state.workers[W1]) == 0
    state.set_worker_status(W1, "paused", "p")
    assert WorkStealing(state).load(state.workers[W1]) == math.inf


# ---------------------------------------------------------------- the victim's side


def worker_with_ready_tasks(recorder) -> WorkerState:
    worker = WorkerState(1, recorder)
    for i in range(3):
        worker.compute_task(f"t-{i}", "f", b"args", i, {}, "compute")
    return worker


def answer(instructions) -> dict:
    [msg] = [i.msg for i in instructions if isinstance(i, SendMessage)]
    return msg


def test_the_victim_gives_back_a_task_it_has_not_started(recorder):
    worker = worker_with_ready_tasks(recorder)
    assert worker.tasks["t-0"].state == "executing"
    msg = answer(worker.steal_request("t-2", "steal-7"))
    assert msg == {"op": "steal-response", "key": "t-2", "state": "ready", "stimulus_id": "steal-7"}
    assert "t-2" not in worker.tasks
    assert recorder.path("t-2")[-1] == "released"
    # finishing the running one starts t-1, never the stolen t-2
    instructions = worker.execute_success("t-0", 8, "int", 0.0, 1.0, "done")
    assert [i.key for i in instructions if hasattr(i, "function_id")] == ["t-1"]


def test_the_victim_keeps_a_task_it_started_or_finished(recorder):
    worker = worker_with_ready_tasks(recorder)
    assert answer(worker.steal_request("t-0", "steal-1"))["state"] == "executing"
    assert worker.tasks["t-0"].state == "executing"
    worker.execute_success("t-0", 8, "int", 0.0, 1.0, "done")
    assert answer(worker.steal_request("t-0", "steal-2"))["state"] == "memory"
    assert worker.tasks["t-0"].state == "memory"
    assert answer(worker.steal_request("nope", "steal-3"))["state"] is None


def test_a_worker_that_joins_paused_gets_nothing_until_it_runs(state):
    state.set_worker_status(W1, "paused", "pause-1")
    submit(state, spec("t"))
    effects = state.add_worker(W2, "w2", 1, "add-w2", status="paused")
    assert not effects.workers and state.tasks["t"].state == "no-worker"
    assert state.workers[W2].status == "paused" and W2 not in state.running
    effects = state.set_worker_status(W2, "running", "unpause-w2")
    assert computed_keys(effects, W2) == ["t"]


def test_a_task_cancelled_then_resent_while_it_runs_is_not_stolen(state, stealing, recorder):
    """The client cancels a running task and at once submits it again: the scheduler sends it
    to the same worker, which carries on with the run it has. That worker must answer a steal
    request with "executing" (as Dask's does), or the scheduler takes the task for one it
    has not started and runs it a second time elsewhere while the first run goes on."""
    worker = WorkerState(1, recorder)

    def deliver(effects: Effects) -> list:
        instructions = []
        for msg in effects.workers.pop(W1, []):
            if msg["op"] == "compute-task":
                instructions += worker.compute_task(
                    msg["key"], msg["function_id"], msg["args"], msg["priority"], {}, "s"
                )
            elif msg["op"] == "free-keys":
                instructions += worker.free_keys(msg["keys"], msg["stimulus_id"])
        return instructions

    keys = [f"t-{i}" for i in range(4)]
    deliver(submit(state, *(spec(k) for k in keys)))
    state.task_started(W1, "t-0")
    assert worker.tasks["t-0"].state == "executing"
    deliver(state.cancel(CLIENT, ["t-0"], "cancel-t-0"))
    assert worker.tasks["t-0"].state == "executing", "a running thread cannot be stopped"
    deliver(submit(state, spec("t-0"), stimulus_id="update-graph-2"))
    assert state.tasks["t-0"].processing_on == W1 and not state.tasks["t-0"].started
    state.add_worker(W2, "w2", 1, "add-w2")
    outcome = stealing.balance()
    assert "t-0" in requests(outcome, W1), "the scheduler cannot know the run carried on"
    [request] = [m for m in outcome.workers[W1] if m["key"] == "t-0"]
    msg = answer(worker.steal_request("t-0", request["stimulus_id"]))
    assert msg["state"] == "executing"
    outcome = stealing.steal_response(W1, "t-0", msg["state"], msg["stimulus_id"])
    assert events(outcome)[0]["action"] == "steal-declined"
    assert not outcome.workers and state.tasks["t-0"].processing_on == W1
    finished = worker.execute_success("t-0", 8, "int", 0.0, 1.0, "done-t-0")
    reports = [i.msg for i in finished if isinstance(i, SendMessage)]
    assert [m["key"] for m in reports if m["op"] == "task-finished"] == ["t-0"]
