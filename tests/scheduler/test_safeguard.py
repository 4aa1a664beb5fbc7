"""Safeguard copies, on SchedulerState driven by hand: an awaited result that stands for enough
compute gets a second copy, so a worker's death does not take the work with it (issue 15)."""

from __future__ import annotations

import math

import pytest

from storied.scheduler.state import Effects, SchedulerState

from .test_state import CLIENT, computed_keys, ops, spec, submit

W1, W2, W3 = "tcp://w1", "tcp://w2", "tcp://w3"
MIN_LINEAGE = 0.5


def workers(state: SchedulerState, *addresses: str) -> SchedulerState:
    for address in addresses:
        state.add_worker(address, address, 1, f"add-{address}")
    return state


@pytest.fixture
def guarded(recorder) -> SchedulerState:
    return workers(SchedulerState(recorder, safeguard_lineage=MIN_LINEAGE), W1, W2)


def run(state: SchedulerState, key: str, seconds: float, nbytes: int = 8) -> Effects:
    """``key`` ran ``seconds`` on the worker it was sent to and finished."""
    worker = state.tasks[key].processing_on
    assert worker is not None, f"{key} is not processing"
    return state.task_finished(worker, key, nbytes, "builtins.int", f"done-{key}", (0, seconds))


def copy_requests(effects: Effects) -> dict[str, dict[str, list[str]]]:
    """worker -> the keys it is asked to fetch a copy of, with their holders."""
    return {
        worker: who_has
        for worker, msgs in effects.workers.items()
        for msg in ops(msgs, "acquire-replicas")
        for who_has in [msg["who_has"]]
    }


def test_an_awaited_result_that_took_long_is_copied_to_another_worker(guarded):
    submit(guarded, spec("a"), spec("b", "a"), wanted=["b"])
    holder = guarded.tasks["a"].processing_on
    other = ({W1, W2} - {holder}).pop()
    effects = run(guarded, "a", 0.6)
    assert copy_requests(effects) == {other: {"a": [holder]}}
    [request] = ops(effects.workers[other], "acquire-replicas")
    assert request["stimulus_id"] == "safeguard-copy-done-a", "the copy's story names its cause"
    assert effects.events == [
        (
            "safeguard-copy",
            {
                "action": "safeguard-copy",
                "key": "a",
                "from": holder,
                "to": other,
                "lineage": pytest.approx(0.6),
                "nbytes": 8,
                "stimulus_id": "safeguard-copy-done-a",
            },
        )
    ]


def test_the_copy_saves_the_result_when_its_first_holder_dies(guarded):
    submit(guarded, spec("a"), spec("b", "a"), spec("c"), wanted=["b"])
    holder = guarded.tasks["a"].processing_on
    other = ({W1, W2} - {holder}).pop()
    run(guarded, "a", 0.6)
    guarded.add_replicas(other, ["a"], "add-keys")
    effects = guarded.remove_worker(holder, "worker-lost", expected=False)
    assert guarded.tasks["a"].state == "memory"
    assert guarded.tasks["a"].who_has == {other}
    assert "a" not in computed_keys(effects, other), "nothing is recomputed"
    assert not ops(effects.clients[CLIENT], "lost-data")


def test_a_quick_result_is_not_copied(guarded):
    submit(guarded, spec("a"), spec("b", "a"), wanted=["b"])
    effects = run(guarded, "a", 0.1)
    assert copy_requests(effects) == {} and effects.events == []


def test_lineage_adds_up_the_released_inputs_so_the_top_of_a_tree_is_copied(guarded):
    leaves = [spec(f"leaf-{i}") for i in range(4)]
    pairs = [spec("pair-0", "leaf-0", "leaf-1"), spec("pair-1", "leaf-2", "leaf-3")]
    submit(guarded, *leaves, *pairs, spec("root", "pair-0", "pair-1"), wanted=["root"])
    for leaf in ("leaf-0", "leaf-1"):
        assert copy_requests(run(guarded, leaf, 0.2)) == {}
    if guarded.tasks["pair-0"].state != "processing":
        pytest.fail("pair-0 should run once its leaves are in")
    effects = run(guarded, "pair-0", 0.2)  # 0.2 + 0.2 + 0.2 of compute to rebuild
    assert guarded.tasks["pair-0"].lineage == pytest.approx(0.6)
    assert [key for who_has in copy_requests(effects).values() for key in who_has] == ["pair-0"]


def test_results_only_clients_hold_are_not_copied(guarded):
    """Persisted data would take twice the memory: only intermediates are safeguarded."""
    submit(guarded, spec("a"))
    assert copy_requests(run(guarded, "a", 5.0)) == {}


def test_a_result_costlier_to_move_than_to_rebuild_is_not_copied(guarded):
    submit(guarded, spec("a"), spec("b", "a"), wanted=["b"])
    assert copy_requests(run(guarded, "a", 0.6, nbytes=10**9)) == {}


def test_the_copy_goes_to_the_worker_holding_fewest_results(recorder):
    state = workers(SchedulerState(recorder, safeguard_lineage=MIN_LINEAGE), W1, W2, W3)
    submit(state, spec("x", restrictions=(W2,)), spec("a", restrictions=(W1,)))
    submit(state, spec("b", "a"), wanted=["b"], stimulus_id="update-graph-2")
    run(state, "x", 0.01)
    assert set(copy_requests(run(state, "a", 0.6))) == {W3}


def test_a_lone_worker_has_nowhere_to_copy_to(recorder):
    state = workers(SchedulerState(recorder, safeguard_lineage=MIN_LINEAGE), W1)
    submit(state, spec("a"), spec("b", "a"), wanted=["b"])
    assert copy_requests(run(state, "a", 5.0)) == {}


def test_never_by_default_as_in_dask(recorder):
    state = workers(SchedulerState(recorder), W1, W2)
    assert state.safeguard_lineage == math.inf
    submit(state, spec("a"), spec("b", "a"), wanted=["b"])
    assert copy_requests(run(state, "a", 1e6)) == {}


def test_shared_inputs_never_count_above_all_the_compute_done(guarded):
    """A chain of diamonds counted along every path would double at each level."""
    specs, previous = [spec("d0")], "d0"
    for level in range(1, 30):
        left, right, join = f"l{level}", f"r{level}", f"d{level}"
        specs += [spec(left, previous), spec(right, previous), spec(join, left, right)]
        previous = join
    submit(guarded, *specs, wanted=[previous])
    total = 0.0
    for key in [s.key for s in specs]:
        total += 0.01
        run(guarded, key, 0.01)
        assert guarded.tasks[key].lineage <= total + 1e-9
