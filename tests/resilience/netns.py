"""A private network of namespaces: a scheduler host and worker hosts on one bridge.

Everything (bridge, veth pairs, 10.x addresses) lives inside the namespaces; the host's own
network is untouched, and deleting the namespaces removes it all.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
SUBNET = "10.251.0"
PORT = 8786


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class PrivateNetwork:
    """Namespaces ``<prefix>-sched`` and ``<prefix>-<worker>``; worker ``i`` is ``SUBNET.i+2``."""

    def __init__(self, workers: list[str]) -> None:
        self.prefix = f"storied{os.getpid()}"
        self.scheduler_ns = f"{self.prefix}-sched"
        self.worker_ns = {name: f"{self.prefix}-{name}" for name in workers}
        self.worker_ip = {name: f"{SUBNET}.{i + 2}" for i, name in enumerate(workers)}
        self.scheduler_address = f"tcp://{SUBNET}.1:{PORT}"
        self.token = secrets.token_hex(16)
        self.processes: list[subprocess.Popen[str]] = []
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self._created: list[str] = []

    def build(self) -> None:
        for ns in (self.scheduler_ns, *self.worker_ns.values()):
            ip("netns", "add", ns)
            self._created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        hub = self.scheduler_ns
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        for name, ns in self.worker_ns.items():
            port = f"v-{name}"
            ip("-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("-n", hub, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.worker_ip[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def cut(self, worker: str) -> None:
        ip("-n", self.worker_ns[worker], "link", "set", "eth0", "down")

    def restore(self, worker: str) -> None:
        ip("-n", self.worker_ns[worker], "link", "set", "eth0", "up")

    def spawn(self, ns: str, args: list[str], env: dict[str, str], **kwargs: Any) -> Any:
        """Run ``args`` in namespace ``ns``. Its "hosts" share this host's ``/dev/shm``, so
        shared memory is off unless ``env`` turns it on: data crosses the network."""
        environ = {
            **os.environ,
            "STORIED_WORKER__SHARED_MEMORY": "false",
            **env,
            "STORIED_AUTH_TOKEN": self.token,
        }
        command = ["ip", "netns", "exec", ns, sys.executable, *args]
        process = subprocess.Popen(command, env=environ, cwd=TESTS_DIR, text=True, **kwargs)
        self.processes.append(process)
        return process

    def start_scheduler(self, env: dict[str, str]) -> None:
        self.spawn(
            self.scheduler_ns,
            [
                "-m",
                "storied",
                "scheduler",
                "--host",
                f"{SUBNET}.1",
                "--port",
                str(PORT),
                "--no-ledger",
            ],
            env,
        )

    def start_worker(self, name: str, env: dict[str, str]) -> None:
        self.workers[name] = self.spawn(
            self.worker_ns[name],
            [
                "-m",
                "storied",
                "worker",
                self.scheduler_address,
                "--name",
                name,
                "--host",
                self.worker_ip[name],
            ],
            env,
        )

    def start_driver(self) -> Driver:
        process = self.spawn(
            self.scheduler_ns,
            ["-m", "resilience.netns_driver", self.scheduler_address],
            {},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return Driver(process)

    def destroy(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        for ns in self._created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class Driver:
    """Asks the client in the scheduler's namespace to act; see ``netns_driver``."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def __call__(self, op: str, **kwargs: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            pytest.fail(f"the driver exited with code {self.process.wait(timeout=10)}")
        reply = json.loads(line)
        if "error" in reply:
            pytest.fail(f"driver {op}: {reply['error']}")
        return reply["ok"]


def skip_unless_netns_possible() -> None:
    """Skip (at run time, with the reason) where namespaces cannot be made."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 ('ip') is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    probe = f"storied-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
