"""A script that ends without closing its cluster, however it ends, leaves no process behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from engine.helpers import interruptible, poll

from .helpers import alive

#: a user's script: a cluster and a client, never closed, and a task that runs for minutes
SCRIPT = """
import json, sys, time
from storied import Client, LocalCluster

cluster = LocalCluster(n_workers=2, threads_per_worker=1, nanny={nanny})
client = Client(cluster)
future = client.submit(time.sleep, 600)
while getattr(cluster.scheduler.tasks.get(future.key), "state", None) != "processing":
    time.sleep(0.01)
workers = client.scheduler_info()["workers"].values()
print(json.dumps([w["pid"] for w in workers] + [w["nanny_pid"] for w in workers]), flush=True)
if {wait}:
    client.gather(future)
"""


def run_script(nanny: bool, wait: bool) -> tuple[subprocess.Popen[str], list[int]]:
    """The script, running, and the pids of its workers and nannies."""
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(nanny=nanny, wait=wait)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    assert script.stdout is not None
    pids = [pid for pid in json.loads(script.stdout.readline()) if pid is not None]
    assert len(pids) == (4 if nanny else 2)
    assert all(alive(pid) for pid in pids)
    return script, pids


@pytest.mark.parametrize(
    ("nanny", "how"),
    [
        *((True, how) for how in ("exits", "SIGINT", "SIGKILL")),
        *((False, how) for how in ("exits", "SIGINT", "SIGKILL")),
    ],
)
def test_a_script_leaves_no_worker_or_nanny_behind(nanny, how):
    script, pids = run_script(nanny, wait=how != "exits")
    if how != "exits":
        script.send_signal(getattr(signal, how))
    script.wait(timeout=30)
    poll(
        lambda: not [pid for pid in pids if alive(pid)],
        timeout=5,
        what=f"workers and nannies of a script that {how} are gone",
    )


def test_the_parent_watch_ends_an_orphan_where_the_kernel_would_not():
    """The portable half, alone: a process watching its parent exits soon after it dies."""
    parent = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([{sys.executable!r}, "-c", (
            "import time; from storied.nanny import lifeline; "
            f"lifeline.watch_parent({{os.getpid()}}); time.sleep(600)"
        )])
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    script = subprocess.Popen(
        [sys.executable, "-c", parent], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    assert script.stdout is not None
    child = int(script.stdout.readline())
    poll(lambda: alive(child))
    script.kill()
    script.wait(timeout=10)
    poll(lambda: not alive(child), timeout=5, what="the orphan exited")
