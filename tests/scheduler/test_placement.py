"""Root tasks go beside their siblings (the other inputs of the task they feed), driven by hand."""

from __future__ import annotations

import math

import pytest

from storied.scheduler import placement
from storied.scheduler.state import SchedulerState
from tests.scheduler.test_state import computed_keys, finish, spec, submit

W1, W2 = "tcp://w1", "tcp://w2"


def pairs(count: int) -> list:
    """``count`` pairs of roots, each added by one task, in dask.order's order (a, b, add)."""
    specs = []
    for i in range(count):
        specs += [spec(f"a-{i}"), spec(f"b-{i}"), spec(f"add-{i}", f"a-{i}", f"b-{i}")]
    return specs


def two_workers(recorder, saturation: float) -> SchedulerState:
    state = SchedulerState(recorder, worker_saturation=saturation)
    state.add_worker(W1, "w1", 1, "add-w1")
    state.add_worker(W2, "w2", 1, "add-w2")
    return state


def worker_of(state: SchedulerState, key: str) -> str | None:
    ts = state.tasks[key]
    return ts.processing_on or next(iter(ts.who_has), None)


@pytest.mark.parametrize("saturation", [1.1, math.inf])
def test_each_pair_of_roots_is_computed_on_one_worker(recorder, saturation):
    """Dask's queuing hands roots to whichever worker frees a slot, splitting pairs; here the
    second root of a pair follows the first, directly or out of the queue."""
    state = two_workers(recorder, saturation)
    submit(state, *pairs(12), wanted=[f"add-{i}" for i in range(12)])
    done: set[str] = set()
    while len(done) < 36:
        running = [ts for ts in state.tasks.values() if ts.state == "processing"]
        assert running, "nothing left to run"
        for ts in sorted(running, key=lambda t: t.priority)[:2]:
            worker = ts.processing_on
            finish(state, ts.key, worker)
            done.add(ts.key)
    for i in range(12):
        assert worker_of(state, f"a-{i}") == worker_of(state, f"b-{i}"), i
    held = [worker_of(state, f"add-{i}") for i in range(12)]
    assert held.count(W1) >= 3 and held.count(W2) >= 3, held


def test_a_queued_root_takes_its_queued_sibling_along(recorder):
    state = two_workers(recorder, 1.1)
    submit(state, *pairs(4), wanted=[f"add-{i}" for i in range(4)])
    assert state.tasks["a-2"].state == state.tasks["b-2"].state == "queued"
    effects = finish(state, "a-0", worker_of(state, "a-0"))
    opened = worker_of(state, "a-0")
    assert computed_keys(effects, opened) == ["a-2", "b-2"]


def test_a_wide_reduction_still_spreads_its_roots(recorder):
    """A dependent with many inputs makes no siblings: its roots go to both workers."""
    state = two_workers(recorder, math.inf)
    roots = [spec(f"r-{i}") for i in range(20)]
    total = spec("total", *(f"r-{i}" for i in range(20)))
    submit(state, *roots, total, wanted=["total"])
    where = [worker_of(state, f"r-{i}") for i in range(20)]
    assert where.count(W1) == where.count(W2) == 10


def test_overlapping_neighbours_do_not_pile_onto_one_worker(recorder):
    """Chunk i feeds tasks that also read chunks i-1 and i+1: every root has a placed sibling,
    yet no worker runs more than one task per thread beyond the least busy."""
    state = two_workers(recorder, math.inf)
    count = 30
    specs = [spec(f"x-{i}") for i in range(count)]
    specs += [
        spec(f"f-{i}", *(f"x-{j}" for j in (i - 1, i, i + 1) if 0 <= j < count))
        for i in range(count)
    ]
    submit(state, *specs, wanted=[f"f-{i}" for i in range(count)])
    where = [worker_of(state, f"x-{i}") for i in range(count)]
    assert abs(where.count(W1) - where.count(W2)) <= 2, where


def test_siblings_come_only_from_small_fan_in_dependents(recorder):
    state = two_workers(recorder, math.inf)
    submit(
        state,
        *(spec(f"r-{i}") for i in range(placement.MAX_FAN_IN + 1)),
        spec("wide", *(f"r-{i}" for i in range(placement.MAX_FAN_IN + 1))),
        spec("pair", "r-0", "r-1"),
        wanted=["wide", "pair"],
    )
    siblings = {s.key for s in placement._siblings(state.tasks["r-0"])}
    assert siblings == {"r-1"}


def test_a_popped_root_takes_only_a_few_queued_siblings(recorder):
    """x-9 is paired with each of six other roots, all queued: it takes MAX_FAN_IN - 1 of
    them out of the queue along with it, not all six."""
    state = two_workers(recorder, 1.1)
    specs = [spec(f"x-{i}") for i in range(10)]
    specs += [spec(f"pair-{i}", "x-9", f"x-{i}") for i in range(3, 9)]
    submit(state, *specs, wanted=[f"pair-{i}" for i in range(3, 9)])
    assert all(state.tasks[f"x-{i}"].state == "queued" for i in range(4, 10))
    taken = placement.queued_siblings(state.tasks["x-9"])
    assert len(taken) == placement.MAX_FAN_IN - 1
    assert {ts.key for ts in taken} <= {f"x-{i}" for i in range(4, 9)}


def test_a_root_does_not_follow_its_sibling_to_a_paused_worker(recorder):
    state = two_workers(recorder, math.inf)
    submit(state, spec("a-0"), wanted=["a-0"])
    first = worker_of(state, "a-0")
    state.set_worker_status(first, "paused", "pause")
    submit(state, spec("b-0"), spec("add-0", "a-0", "b-0"), wanted=["add-0"], stimulus_id="2")
    assert worker_of(state, "b-0") not in (None, first)
