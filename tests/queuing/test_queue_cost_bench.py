"""bench/queue_cost.py drives the real state machine to the end of every task it submits."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "queue_cost.py"


@pytest.fixture(scope="module")
def queue_cost():
    spec = importlib.util.spec_from_file_location("queue_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("workload", "size", "tasks"), [("map", 500, 500), ("tree", 256, 511)])
def test_every_task_finishes_with_and_without_queuing(queue_cost, workload, size, tasks):
    """``drive`` raises if any task is left over."""
    assert len(queue_cost.graph(workload, size)) == tasks
    for saturation in (1.1, math.inf):
        spent, batches = queue_cost.drive(workload, size, saturation)
        assert spent >= 0 and batches >= 2


def test_queued_map_tasks_go_to_workers_in_a_few_batches(queue_cost):
    """Topped up at half their backlog, not one message per finished task."""
    _, batches = queue_cost.drive("map", 2_000, 1.1)
    assert batches < 2_000 / 20
