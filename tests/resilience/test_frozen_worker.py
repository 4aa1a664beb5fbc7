"""A worker frozen by SIGSTOP is dropped after worker-ttl, and rejoins afresh (issue 5)."""

from __future__ import annotations

import signal

import pytest
from engine.helpers import poll, where_am_i

from .helpers import (
    busiest_worker,
    holds_for,
    pairwise_sum_expected,
    pairwise_sum_graph,
    remove_worker_events,
)

N_LEAVES = 1_000
SHORT_TTL = 0.6


def test_frozen_worker_is_replaced_then_rejoins(fragile_cluster, fragile_client, worker_processes):
    cluster, client = fragile_cluster, fragile_client
    futures = pairwise_sum_graph(client, N_LEAVES, seconds=0.002)
    poll(lambda: sum(f.done() for f in futures) >= len(futures) // 10, timeout=30)
    frozen = busiest_worker(client)
    name = client.scheduler_info()["workers"][frozen]["name"]
    process = worker_processes.process(frozen)
    process.send_signal(signal.SIGSTOP)
    try:
        [removal] = poll(lambda: remove_worker_events(client, {frozen}), timeout=15)
        assert removal["reason"].startswith("worker-ttl-timed-out")
        assert removal["cause"] == "heartbeat-timeout" and removal["expected"] is False
        assert removal["stimulus_id"].startswith("worker-lost-heartbeat-timeout-")
        assert removal["lost-tasks"]
        assert futures[-1].result(timeout=60) == pairwise_sum_expected(N_LEAVES)
        assert {f.status for f in futures} == {"finished"}
        assert process.poll() is None, "a frozen worker is not dead"
    finally:
        process.send_signal(signal.SIGCONT)

    poll(lambda: frozen in cluster.scheduler.workers, timeout=15)
    assert client.submit(where_am_i, workers=[frozen], pure=False).result(timeout=10) == (
        frozen,
        name,
    )
    joins = [
        msg
        for _, msg in client.get_events(frozen)
        if msg["action"] in ("add-worker", "remove-worker")
    ]
    assert [msg["action"] for msg in joins] == ["add-worker", "remove-worker", "add-worker"]
    worker_log = "\n".join(text for _, text in client.get_worker_logs(workers=[frozen])[frozen])
    assert "Lost connection to scheduler" in worker_log
    assert "rejoined" in worker_log


@pytest.mark.parametrize(
    "cluster_config",
    [{"scheduler.worker-ttl": f"{SHORT_TTL}s", "worker.heartbeat-interval": "100ms"}],
)
def test_a_short_ttl_spares_workers_that_heartbeat_as_configured(fragile_cluster, fragile_client):
    """worker.heartbeat-interval reaches worker processes: idle ones are not taken for dead."""
    client = fragile_client

    def no_worker_removed() -> bool:
        return not remove_worker_events(client)

    holds_for(no_worker_removed, seconds=4 * SHORT_TTL)
    assert len(client.scheduler_info()["workers"]) == 2
