"""A nanny asked to stop closes its worker cleanly, even while it is still starting."""

from __future__ import annotations

import time

from storied import Client, LocalCluster, WorkerPlugin

from .helpers import events


class SlowSetup(WorkerPlugin):
    """Holds a joining worker (and so its nanny) in start-up for a while after it has
    registered with the scheduler."""

    def setup(self, worker):
        time.sleep(1)


def test_a_worker_scaled_away_while_its_nanny_starts_leaves_cleanly():
    """``scale`` stops a nanny as soon as its worker has joined the scheduler, which may be
    before the nanny (or the worker) has finished starting: the stop waits for the start."""
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        client.register_plugin(SlowSetup(), name="slow-setup")
        cluster.scale(2)
        joining = cluster.workers["1"]
        cluster.scale(1)
        assert joining.process.poll() == 0, "the nanny closed cleanly"
        [removed] = events(client, "all", "remove-worker")
        assert removed["name"] == "1"
        assert removed["reason"] == "worker-close"
        assert removed["stimulus_id"].startswith("worker-left-")
