"""Scheduler and workers on separate hosts (network namespaces); one worker is cut off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from engine.helpers import poll

from .netns import PrivateNetwork, skip_unless_netns_possible

WORKERS = ["w1", "w2"]
SCHEDULER_ENV = {"STORIED_SCHEDULER__WORKER_TTL": "2s"}
SHORT_RECONNECT_TIMEOUT = 5

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


@pytest.fixture
def reconnect_timeout() -> int:
    """Seconds a worker tries to rejoin; long enough to outlast a cut the test repairs."""
    return 40


@pytest.fixture
def network(reconnect_timeout: int) -> Iterator[PrivateNetwork]:
    skip_unless_netns_possible()
    network = PrivateNetwork(WORKERS)
    try:
        network.build()
        network.start_scheduler(SCHEDULER_ENV)
        for name in WORKERS:
            network.start_worker(name, {"STORIED_COMM__RECONNECT_TIMEOUT": f"{reconnect_timeout}s"})
        yield network
    finally:
        network.destroy()


def test_cut_off_worker_is_recomputed_around_then_rejoins(network):
    driver = network.start_driver()
    driver("wait_workers", n=2)
    total = driver("submit", leaves=600, seconds=0.005)
    poll(lambda: driver("progress")["done"] >= total // 5, timeout=30)
    holdings = driver("progress")["workers"]["w1"]
    assert holdings["processing"] + holdings["in_memory"], "w1 has work to lose"
    network.cut("w1")
    try:
        [removal] = poll(lambda: driver("removals"), timeout=15)
        assert removal["name"] == "w1"
        assert removal["reason"].startswith("worker-ttl-timed-out")
        assert removal["lost-tasks"]
        assert driver("result") == {"correct": True, "statuses": ["finished"]}
    finally:
        network.restore("w1")

    poll(lambda: "w1" in driver("progress")["workers"], timeout=40)
    assert driver("where", worker="w1") == [removal["worker"], "w1"]


@pytest.mark.parametrize("reconnect_timeout", [SHORT_RECONNECT_TIMEOUT])
def test_worker_cut_off_for_good_gives_up_after_reconnect_timeout(network):
    """The scheduler drops it after worker-ttl; the worker must notice too, try to rejoin for
    comm.reconnect-timeout, then exit, rather than wait on a connection that is gone."""
    driver = network.start_driver()
    driver("wait_workers", n=2)
    network.cut("w1")
    poll(lambda: driver("removals"), timeout=15)
    worker = network.workers["w1"]

    def cut_off_worker_gave_up() -> bool:
        return worker.poll() is not None

    poll(cut_off_worker_gave_up, timeout=SHORT_RECONNECT_TIMEOUT + 10)
