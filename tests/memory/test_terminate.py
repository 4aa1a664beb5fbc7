"""A worker past its terminate fraction is killed by its nanny and comes back (item 7)."""

from __future__ import annotations

import pytest
from engine.helpers import inc, poll

from storied import Client, KilledWorker, LocalCluster

from .helpers import allocate_without_bound, memory_events


def test_a_worker_past_its_memory_limit_is_restarted_and_the_task_ends_in_killed_worker(
    tmp_path,
):
    attempts_log = tmp_path / "attempts"
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            memory_limit="200MB",
            allowed_failures=1,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        [before] = client.scheduler_info()["workers"].values()
        runaway = client.submit(allocate_without_bound, str(attempts_log))
        with pytest.raises(KilledWorker, match=runaway.key):
            runaway.result(timeout=30)
        attempts = [int(pid) for pid in attempts_log.read_text().split()]
        assert len(attempts) == 2, "allowed-failures 1: the second death ends the task"
        assert attempts[0] == before["pid"]

        [after] = poll(lambda: list(client.scheduler_info()["workers"].values()), timeout=20)
        assert after["name"] == before["name"] == "0"
        assert after["pid"] not in attempts, "a new worker process"
        assert after["nanny_pid"] == before["nanny_pid"]
        assert client.submit(inc, 1).result(timeout=10) == 2

        removals = [
            msg
            for _, msg in client.get_events("all")
            if msg.get("action") == "remove-worker" and runaway.key in msg["lost-tasks"]
        ]
        assert len(removals) == 2
        for removal in removals:
            assert removal["signal"] == "SIGKILL"
            assert "memory limit" in removal["reason"]
        restarts = poll(
            lambda: len(found := memory_events(client, "memory-restart")) == 2 and found,
            what="two memory-restart events",
        )
        assert [r["pid"] for r in restarts] == attempts
        for restart in restarts:
            assert restart["rss"] > 0.95 * 200_000_000
            assert restart["memory-limit"] == 200_000_000
            assert restart["nanny"] == before["nanny"]
        assert any(msg.get("action") == "memory-restart" for _, msg in client.get_events("all"))
