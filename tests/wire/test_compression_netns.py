"""Compression between two worker hosts (network namespaces on one bridge): a link between
hosts that both chose lz4 carries compressible data in a fraction of its bytes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.resilience.netns import PrivateNetwork, skip_unless_netns_possible

WORKERS = ["w1", "w2"]
PAYLOAD = 40_000_000

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


@pytest.fixture
def network() -> Iterator[PrivateNetwork]:
    skip_unless_netns_possible()
    network = PrivateNetwork(WORKERS)
    compress = {"STORIED_COMM__COMPRESSION": "lz4"}
    try:
        network.build()
        network.start_scheduler(compress)
        for name in WORKERS:
            network.start_worker(name, compress)
        yield network
    finally:
        network.destroy()


def _received_bytes(network: PrivateNetwork, worker: str) -> int:
    ns = network.worker_ns[worker]
    path = "/sys/class/net/eth0/statistics/rx_bytes"
    return int(subprocess.check_output(["ip", "netns", "exec", ns, "cat", path], timeout=10))


def _ask(driver: subprocess.Popen[str], line: str) -> Any:
    assert driver.stdin is not None and driver.stdout is not None
    driver.stdin.write(line + "\n")
    driver.stdin.flush()
    return _reply(driver)


def _reply(driver: subprocess.Popen[str]) -> Any:
    assert driver.stdout is not None
    reply = driver.stdout.readline()
    if not reply:
        pytest.fail(f"the driver exited with code {driver.wait(timeout=10)}")
    return json.loads(reply)


def _move(network: PrivateNetwork, driver: subprocess.Popen[str], kind: str) -> int:
    """Bytes worker w2's host received while fetching a ``kind`` array from w1."""
    assert _ask(driver, f"{kind} w1 w2") == {"made": True}
    before = _received_bytes(network, "w2")
    assert _ask(driver, "go") == {"ok": True}
    return _received_bytes(network, "w2") - before


def test_worker_hosts_that_chose_lz4_move_compressible_data_compressed(network):
    driver = network.spawn(
        network.scheduler_ns,
        ["-m", "wire.compression_driver", network.scheduler_address],
        {"STORIED_COMM__COMPRESSION": "lz4"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert _reply(driver) == {"ready": True}
    assert _move(network, driver, "zeros") < PAYLOAD // 20
    assert _move(network, driver, "noise") > PAYLOAD  # incompressible: sent as it is
