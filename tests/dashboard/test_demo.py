"""``make demo`` (``examples/demo.py``): it prints the dashboard's address and, in a terminal,
keeps the cluster up until Enter is pressed; without a terminal it never waits."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

from tests.dashboard.conftest import get
from tests.engine.helpers import poll

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
#: the demo computes for real (pi twice, a dask.array): ~15 s on a loaded 2-core machine
RUN_TIMEOUT = 180


def dashboard_link(output: str) -> str:
    match = re.search(r"^dashboard: (http://\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_without_a_terminal_it_prints_the_address_and_never_waits() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert dashboard_link(done.stdout).endswith("/status")
    assert "press Enter" not in done.stdout


def test_in_a_terminal_the_dashboard_stays_up_until_enter() -> None:
    terminal, its_side = pty.openpty()
    process = subprocess.Popen([sys.executable, str(DEMO)], stdin=its_side, stdout=subprocess.PIPE)
    os.close(its_side)
    assert process.stdout is not None
    stdout = process.stdout.fileno()
    output: list[bytes] = []  # as it comes: the prompt ends without a newline

    def read() -> None:
        while chunk := os.read(stdout, 4096):
            output.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        poll(lambda: b"press Enter" in b"".join(output), timeout=RUN_TIMEOUT, what="the prompt")
        link = dashboard_link(b"".join(output).decode())
        assert get(link)[0] == 200  # the work is done and the dashboard still answers
        assert process.poll() is None
        os.write(terminal, b"\n")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(terminal)
        reader.join(timeout=10)
