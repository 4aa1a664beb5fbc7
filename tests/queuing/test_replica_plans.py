"""The pure plans behind replicate and rebalance."""

from __future__ import annotations

import pytest

from storied.scheduler.replicas import plan_rebalance, plan_replicas, worker_pool
from storied.scheduler.state import SchedulerState, TaskState

W1, W2, W3 = "tcp://w1", "tcp://w2", "tcp://w3"


@pytest.fixture
def state(recorder) -> SchedulerState:
    state = SchedulerState(recorder)
    for name in ("w1", "w2", "w3"):
        state.add_worker(f"tcp://{name}", name, 1, f"add-{name}")
    return state


def held(state: SchedulerState, key: str, nbytes: int, *holders: str) -> TaskState:
    ts = state.tasks[key] = TaskState(key, None, None, 0)
    ts.state, ts.nbytes = "memory", nbytes
    for address in holders:
        ts.who_has.add(address)
        state.workers[address].has_what.add(ts)
    return ts


def test_replicas_go_to_the_workers_holding_least(state):
    held(state, "busy-1", 1, W2)
    a = held(state, "a", 1, W1)
    fetches, drops, wanted = plan_replicas([a], 2, worker_pool(state, None))
    assert fetches == {W3: {"a": [W1]}} and drops == {} and wanted == 2


def test_replicating_to_fewer_workers_drops_the_extra_copies(state):
    a = held(state, "a", 1, W1, W2, W3)
    held(state, "more", 1, W3)
    fetches, drops, wanted = plan_replicas([a], 1, worker_pool(state, None))
    assert fetches == {} and wanted == 1
    assert sum(len(keys) for keys in drops.values()) == 2
    assert drops[W3] == ["a"], "the fullest holder gives up its copy first"


def test_n_is_capped_by_the_workers_named(state):
    a = held(state, "a", 1, W1)
    fetches, _, wanted = plan_replicas([a], 5, worker_pool(state, [W1, W2]))
    assert fetches == {W2: {"a": [W1]}} and wanted == 2


def test_an_unknown_worker_is_named_in_the_error(state):
    with pytest.raises(ValueError, match="tcp://nowhere"):
        worker_pool(state, [W1, "tcp://nowhere"])


def test_rebalance_moves_the_biggest_keys_from_the_fullest_to_the_emptiest(state):
    tasks = [held(state, f"k{i}", 10, W1) for i in range(6)] + [held(state, "small", 1, W2)]
    moves = plan_rebalance(tasks, worker_pool(state, None))
    landed = {W1: 60, W2: 1, W3: 0}
    for key, sender, recipient in moves:
        assert sender == W1
        landed[sender] -= state.tasks[key].nbytes
        landed[recipient] += state.tasks[key].nbytes
    assert max(landed.values()) - min(landed.values()) <= 10


def test_a_balanced_cluster_moves_nothing(state):
    tasks = [held(state, f"k{w}", 10, w) for w in (W1, W2, W3)]
    assert plan_rebalance(tasks, worker_pool(state, None)) == []
