"""Scheduler states with one or two one-thread workers, for the pure state machine's tests."""

from __future__ import annotations

import pytest

from storied.scheduler.state import SchedulerState


@pytest.fixture
def state(recorder) -> SchedulerState:
    return SchedulerState(recorder, allowed_failures=1)


@pytest.fixture
def one_worker(state: SchedulerState) -> SchedulerState:
    state.add_worker("tcp://w1", "w1", 1, "add-w1")
    return state


@pytest.fixture
def two_workers(one_worker: SchedulerState) -> SchedulerState:
    one_worker.add_worker("tcp://w2", "w2", 1, "add-w2")
    return one_worker
