"""The ledger's SQLite work runs in a process of its own, which ends with the scheduler's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from storied.record.ledger import Ledger
from tests.record.test_ledger import wait_until, write_story

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "history.db"


def test_the_writer_is_a_process_of_its_own_that_ends_with_the_ledger(path):
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    records = write_story(ledger, run_id, ledger.first_seq(run_id))
    ledger.flush()
    pid = ledger.writer_pid
    assert pid is not None and pid != os.getpid()
    assert pid in {child.pid for child in psutil.Process().children()}
    assert ledger.writer_process_cpu_seconds > 0
    assert ledger.writer_cpu_seconds >= ledger.writer_process_cpu_seconds
    assert ledger.story("x") == records
    ledger.close()
    assert ledger.writer_pid is None and not psutil.pid_exists(pid)


def test_a_killed_schedulers_writer_process_ends_and_what_it_committed_stays(path):
    """SIGKILL the process that holds the ledger: its writer process sees its socket close
    and ends, what it committed stays, and the next writer takes the file."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from storied.record.ledger import Ledger
        from tests.record.test_ledger import write_story
        ledger = Ledger({str(path)!r}, flush_interval=3600)
        run_id = ledger.start_run({{}})
        write_story(ledger, run_id, ledger.first_seq(run_id))
        ledger.flush()
        print(ledger.writer_pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -9, killed.stderr
    writer_pid = int(killed.stdout)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(writer_pid) and psutil.Process(writer_pid).status() != "zombie":
        assert time.monotonic() < deadline, "the writer process outlived its scheduler"
        time.sleep(0.05)
    assert [(r.key, r.finish) for r in Ledger(path).story("x")] == [
        ("x", "waiting"),
        ("x", "processing"),
        ("y", "waiting"),
        ("x", "memory"),
    ]
    next_writer = Ledger(path)
    next_writer.start_run({})
    next_writer.close()
    wait_until(lambda: len(Ledger(path).runs()) == 2)


def test_retention_goes_on_while_nothing_new_is_written(path):
    """Pruning takes 50 blocks at a time; the writer process hears from the scheduler's side
    when its next chunk is due even while there is nothing new to write."""
    ledger = Ledger(path, retain=3600, prune_every=0.05, flush_interval=0.02)
    run_id = ledger.start_run({})
    old = time.time() - 7200
    for number in range(60):  # a log each: sixty blocks, older than the retention
        write_story(ledger, run_id, ledger.first_seq(run_id) + number * 100, timestamp=old)
    ledger.flush()
    wait_until(lambda: Ledger(path).story("x") == [], timeout=10)
    ledger.close()
