"""A worker hands its executor ready tasks beyond its threads (``worker.executor-lookahead``), so
a thread that finishes a task starts the next without a round trip through the event loop."""

from __future__ import annotations

import pytest
from engine.helpers import inc, poll, wait_for_file

from storied import Client, LocalCluster, config
from storied.worker.server import Worker
from storied.worker.state import Execute, Rejoin, SendMessage, Withdraw, WorkerState

from .test_state import compute, executed, succeed


def handed(instructions: list) -> list[tuple[str, bool]]:
    """(key, queued) of each task handed to the executor."""
    return [(i.key, i.queued) for i in instructions if isinstance(i, Execute)]


@pytest.fixture
def state(recorder) -> WorkerState:
    return WorkerState(nthreads=1, recorder=recorder, lookahead=1)


def test_one_task_beyond_the_thread_is_handed_over_queued(state):
    assert handed(compute(state, "a", priority=0)) == [("a", False)]
    assert handed(compute(state, "b", priority=1)) == [("b", True)]
    assert handed(compute(state, "c", priority=2)) == []
    assert [state.tasks[k].state for k in "abc"] == ["executing", "executing", "ready"]
    # the thread went on to b; c takes b's place in the executor's queue
    assert handed(succeed(state, "a")) == [("c", True)]


def test_once_the_executor_has_drained_the_next_task_starts_at_once(state):
    compute(state, "a")
    compute(state, "b")
    succeed(state, "a")
    assert handed(succeed(state, "b")) == []
    assert handed(compute(state, "c")) == [("c", False)]


def test_without_lookahead_nothing_waits_in_the_executor(recorder):
    state = WorkerState(nthreads=2, recorder=recorder)
    instructions = compute(state, "a") + compute(state, "b") + compute(state, "c")
    assert handed(instructions) == [("a", False), ("b", False)]


def test_a_seceded_task_rejoins_without_waiting_behind_tasks_handed_after_it(state):
    compute(state, "seceder")
    state.secede("seceder", "secede")
    compute(state, "a")
    compute(state, "b")
    for key in "cdef":
        compute(state, key)
    assert state.rejoin("seceder", "rejoin") == []
    # nothing more is handed over while it waits; once the executor is down to its threads'
    # worth it rejoins, ahead of the ready tasks
    assert handed(succeed(state, "a")) == []
    rejoined = succeed(state, "b")
    assert [i.key for i in rejoined if isinstance(i, Rejoin)] == ["seceder"]
    assert executed(rejoined) == []
    # it holds the slot again, in a thread of its own: nothing is handed ahead beside it
    assert handed(compute(state, "g")) == []
    assert handed(state.execute_success("seceder", 8, "int", 1.0, 2.0, "done")) == [
        ("c", False),
        ("d", True),
    ]


def test_tasks_that_claim_resources_are_not_handed_ahead(recorder):
    state = WorkerState(nthreads=1, recorder=recorder, resources={"GPU": 2}, lookahead=1)
    for key in ("a", "b"):
        state.compute_task(key, "f", b"", 0, {}, key, resources={"GPU": 1})
    assert state.tasks["b"].state == "constrained"
    assert state.available_resources == {"GPU": 1}
    assert handed(succeed(state, "a")) == [("b", False)]


def test_a_steal_request_takes_a_task_back_from_the_executor_if_no_thread_has_it(state):
    compute(state, "a")
    compute(state, "b")
    compute(state, "c")
    assert state.steal_request("b", "steal") == [Withdraw("b", "steal", steal=True)]
    instructions = state.execute_withdrawn("b", "steal", steal=True)
    assert [i.msg for i in instructions if isinstance(i, SendMessage)] == [
        {"op": "steal-response", "key": "b", "state": "ready", "stimulus_id": "steal"}
    ]
    assert "b" not in state.tasks
    assert handed(instructions) == [("c", True)]


def test_a_steal_request_for_a_task_a_thread_took_is_refused(state):
    compute(state, "a")
    compute(state, "b")
    assert state.steal_request("b", "steal") == [Withdraw("b", "steal", steal=True)]
    # the executor had no "b" left: a thread runs it
    state.execute_started("b")
    [reply] = state.steal_request("b", "steal")
    assert reply.msg["state"] == "executing"
    assert state.tasks["b"].assigned


def withdrawn(instructions: list) -> list[str]:
    return [i.key for i in instructions if isinstance(i, Withdraw)]


def urgent(state: WorkerState, key: str) -> list:
    """A task of a higher user priority (``dask.annotate(priority=...)``, ``submit``'s)."""
    return state.compute_task(key, "f", b"", 9, {}, f"compute-{key}", user_priority=10)


def test_a_task_earlier_in_the_scheduler_s_order_passes_no_task_handed_ahead(state):
    compute(state, "running", priority=0)
    compute(state, "later", priority=5)
    instructions = compute(state, "earlier", priority=1)
    assert handed(instructions) == [] and withdrawn(instructions) == []
    # "later" runs next (its thread took it at once); "earlier" follows it
    assert handed(succeed(state, "running")) == [("earlier", True)]


def test_a_task_that_outranks_one_waiting_in_the_executor_takes_its_place(state):
    compute(state, "running")
    compute(state, "low")
    instructions = urgent(state, "urgent")
    assert handed(instructions) == [] and withdrawn(instructions) == ["low"]
    # the executor gave it back: it is ready again, behind the urgent one now handed over
    instructions = state.execute_withdrawn("low", "withdrawn")
    assert handed(instructions) == [("urgent", True)] and withdrawn(instructions) == []
    assert state.tasks["low"].state == "ready"
    assert handed(succeed(state, "running")) == [("low", True)]


def test_a_task_a_thread_took_already_is_not_withdrawn(state):
    compute(state, "running")
    compute(state, "low")
    assert withdrawn(urgent(state, "urgent")) == ["low"]
    # too late: a thread had taken it; its start is reported, and the withdrawal is moot
    assert [i.msg for i in state.execute_started("low") if isinstance(i, SendMessage)] == [
        {"op": "task-started", "key": "low"}
    ]
    assert state.execute_withdrawn("low", "withdrawn") == []
    assert state.tasks["low"].state == "executing"
    assert withdrawn(urgent(state, "urgent-2")) == []


def test_only_a_task_handed_ahead_reports_its_start_from_its_thread(state):
    compute(state, "a")
    compute(state, "b")
    assert state.execute_started("a") == []
    assert len(state.execute_started("b")) == 1
    assert state.execute_started("b") == []


def test_a_released_task_withdrawn_from_the_executor_never_runs(state, recorder):
    compute(state, "running")
    compute(state, "low")
    state.free_keys(["low"], "free")
    assert state.tasks["low"].cancelled
    assert withdrawn(urgent(state, "urgent")) == ["low"]
    assert handed(state.execute_withdrawn("low", "withdrawn")) == [("urgent", True)]
    assert "low" not in state.tasks
    assert recorder.path("low")[-2:] == ["executing", "released"]


@pytest.mark.parametrize("value", [-1, 1.5, "two", True])
def test_a_bad_lookahead_is_refused_with_what_to_set(value):
    with (
        config.set({"worker.executor-lookahead": value}),
        pytest.raises(ValueError, match=r"worker\.executor-lookahead must be a whole number"),
    ):
        Worker("tcp://127.0.0.1:8786")


def test_the_scheduler_hears_a_queued_task_started_only_when_its_thread_takes_it(tmp_path):
    """So a death while the first task runs blames that task and not the one queued behind it,
    and work stealing may still take the queued one."""
    gate = str(tmp_path / "gate")
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        blocker = client.submit(wait_for_file, gate)
        behind = client.submit(inc, 1)
        tasks = cluster.scheduler.state.tasks

        def worker_state(key: str, dask_worker=None) -> str | None:
            ts = dask_worker.state.tasks.get(key)
            return None if ts is None else ts.state

        def both_handed_over() -> bool:
            states = client.run(worker_state, behind.key).values()
            return list(states) == ["executing"] and tasks[blocker.key].started

        poll(both_handed_over, timeout=10)
        assert not tasks[behind.key].started
        with open(gate, "w"):
            pass
        assert behind.result(timeout=10) == 2
        assert blocker.result(timeout=10) in cluster.scheduler.workers
