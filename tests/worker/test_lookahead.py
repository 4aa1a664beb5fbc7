"""A worker hands its executor ready tasks beyond its threads (``worker.executor-lookahead``), so
a thread that finishes a task starts the next without a round trip through the event loop."""

from __future__ import annotations

import pytest
from engine.helpers import inc, poll, wait_for_file

from storied import Client, LocalCluster, config
from storied.worker.server import Worker
from storied.worker.state import Execute, Rejoin, WorkerState

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


def test_a_steal_request_for_a_task_handed_over_is_refused(state):
    compute(state, "a")
    compute(state, "b")
    [reply] = state.steal_request("b", "steal")
    assert reply.msg["state"] == "executing"
    assert state.tasks["b"].assigned


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
