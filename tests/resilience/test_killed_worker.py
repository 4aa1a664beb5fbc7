"""A task that keeps killing its workers is given up on with KilledWorker (issue 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine.helpers import inc, poll

from storied import KilledWorker

from .helpers import remove_worker_events

ALLOWED_FAILURES = 1


def die_hard(attempts_log: str) -> None:
    """Note the attempt where the test can count it, then take the worker down with us."""
    with open(attempts_log, "a") as log:
        log.write(f"{os.getpid()}\n")
        log.flush()
        os.fsync(log.fileno())
    os._exit(13)


@pytest.mark.parametrize("cluster_config", [{"scheduler.allowed-failures": ALLOWED_FAILURES}])
@pytest.mark.parametrize("n_workers", [1])
def test_a_task_that_kills_its_workers_errs_with_killed_worker(
    fragile_cluster, fragile_client, worker_processes, tmp_path
):
    """One worker, so that each death is followed by its replacement before the next."""
    cluster, client = fragile_cluster, fragile_client
    attempts_log = tmp_path / "attempts"
    doomed = client.submit(die_hard, str(attempts_log))
    replaced = 0
    while not doomed.done() or worker_processes.dead():
        poll(lambda: doomed.done() or worker_processes.dead(), timeout=30)
        replaced += worker_processes.replace_dead()
    poll(lambda: len(cluster.scheduler.workers) == 1, timeout=30)

    with pytest.raises(KilledWorker, match=doomed.key) as info:
        doomed.result(timeout=1)
    assert info.value.key == doomed.key
    attempts = Path(attempts_log).read_text().split()
    assert len(attempts) == ALLOWED_FAILURES + 1
    assert len(set(attempts)) == len(attempts), "each attempt ran in a different worker"
    assert replaced == len(attempts)

    removals = remove_worker_events(client)
    assert [doomed.key in event["lost-tasks"] for event in removals] == [True] * len(attempts)
    final = cluster.scheduler.transitions(keys=[doomed.key], finish="erred")
    assert [rec.stimulus_id for rec in final] == [removals[-1]["stimulus_id"]]

    assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
    assert len(client.scheduler_info()["workers"]) == 1
