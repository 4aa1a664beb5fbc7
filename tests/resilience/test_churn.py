"""Churn: a worker of three SIGKILLed and replaced every few seconds for a whole 5,000-task
reduction, and the answer is still right (issue "Workers that come back", items 3 and 4).

Before scheduler-side queuing this ended in KilledWorker: every task queued on a dead worker
was blamed for its death, and each kill threw away a thousand queued tasks.
"""

from __future__ import annotations

import contextlib
import signal

import pytest

from storied import wait

from .helpers import pairwise_sum_expected, pairwise_sum_graph, remove_worker_events

N_LEAVES = 2_500  # 4,999 tasks
#: seconds between kills
CHURN_PERIOD = 3.0


def finished_within(future, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        wait([future], timeout=seconds)
    return future.done()


@pytest.mark.parametrize("n_workers", [3])
@pytest.mark.parametrize("run", [1, 2, 3])
def test_a_reduction_survives_a_worker_killed_every_few_seconds(
    fragile_cluster, fragile_client, worker_processes, run
):
    cluster, client = fragile_cluster, fragile_client
    futures = pairwise_sum_graph(client, N_LEAVES, seconds=0.008)
    total = futures[-1]
    killed: list[str] = []
    while not finished_within(total, CHURN_PERIOD):
        victim = min(cluster.scheduler.workers)  # the three take turns: sorted addresses
        process = worker_processes.process(victim)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        worker_processes.replace_dead()
        killed.append(victim)

    assert total.result(timeout=5) == pairwise_sum_expected(N_LEAVES)
    assert len(killed) >= 2, "the reduction ended before the churn could test anything"
    assert [e["worker"] for e in remove_worker_events(client, set(killed))] == killed
    # no task was blamed for more deaths than it could have caused
    assert not cluster.scheduler.transitions(finish="erred")
