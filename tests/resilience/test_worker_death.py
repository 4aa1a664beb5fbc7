"""Workers killed mid-graph: nothing is lost, and the ledger says what happened (issue 5)."""

from __future__ import annotations

from engine.helpers import poll

from storied import wait

from .helpers import (
    busiest_worker,
    pairwise_sum_expected,
    pairwise_sum_graph,
    remove_worker_events,
)

N_LEAVES = 2_560  # 5,119 tasks


def test_sigkilled_workers_lose_nothing(fragile_cluster, fragile_client, worker_processes):
    cluster, client = fragile_cluster, fragile_client
    futures = pairwise_sum_graph(client, N_LEAVES, seconds=0.001)
    assert len(futures) >= 5_000
    killed: list[str] = []
    while len(killed) < 3:
        # strike once a fair share of the graph is done since the last replacement
        target = sum(f.done() for f in futures) + len(futures) // 10
        poll(lambda n=target: sum(f.done() for f in futures) >= n, timeout=60)
        assert not futures[-1].done(), "the graph finished before the workers were killed"
        victim = busiest_worker(client)
        worker_processes.kill_and_replace(victim)
        killed.append(victim)

    assert futures[-1].result(timeout=60) == pairwise_sum_expected(N_LEAVES)
    assert not wait(futures, timeout=60).not_done
    assert {f.status for f in futures} == {"finished"}

    removals = remove_worker_events(client, set(killed))
    assert [event["worker"] for event in removals] == killed
    for event in removals:
        assert event["reason"]
        assert event["lost-tasks"], "a busy worker died: it was running or holding something"
        assert event["stimulus_id"].startswith("worker-lost")
        lost = set(event["lost-tasks"])
        caused = cluster.scheduler.transitions(stimulus_id=event["stimulus_id"])
        assert lost <= {rec.key for rec in caused}
        rescheduled = {rec.key for rec in caused if rec.start == "processing"}
        assert rescheduled, "it was running something"
        story = client.story(*rescheduled)
        told = {entry["key"] for entry in story if entry["stimulus_id"] == event["stimulus_id"]}
        assert rescheduled <= told
