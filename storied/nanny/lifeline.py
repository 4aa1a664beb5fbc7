"""A child process of storied's dies with its parent, so nothing is ever left orphaned.

The parent (``LocalCluster`` for its nannies or workers, a nanny for its worker) names itself
in ``PARENT_PID_ENV_VAR``; the child calls ``die_with_parent`` first thing. On Linux the kernel
then kills the child the moment the parent dies (``prctl(PR_SET_PDEATHSIG)``); everywhere, a
thread polling the parent pid exits the process soon after. Either way running tasks stop: a
worker whose parent is gone has no one left to hand results to.

A worker under a nanny also tells the nanny, through an inherited pipe, that it has joined the
scheduler (``report_joined``): the nanny backs off restarts only for workers that die before.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

logger = logging.getLogger("storied.nanny")

PARENT_PID_ENV_VAR = "STORIED_INTERNAL_PARENT_PID"
#: a worker under a nanny: the nanny's id and the pipe to report to, as JSON
NANNY_ENV_VAR = "STORIED_INTERNAL_NANNY"
#: how often the portable watcher checks the parent (the 5 s promise holds with room to spare)
PARENT_POLL_INTERVAL = 0.25
#: the exit code of a process whose parent died
ORPHANED_EXIT_CODE = 3
_PR_SET_PDEATHSIG = 1


def environ_with_parent(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child that must not outlive this process."""
    return {**env, PARENT_PID_ENV_VAR: str(os.getpid())}


def die_with_parent() -> None:
    """If a storied parent started this process, exit when that parent is gone."""
    expected = os.environ.pop(PARENT_PID_ENV_VAR, None)
    if not expected:
        return
    parent = int(expected)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # it died before the kernel was told to watch it
        os._exit(ORPHANED_EXIT_CODE)
    watch_parent(parent)


def watch_parent(parent: int) -> None:
    """Exit this process soon after ``parent`` (its parent now) is gone: the portable way."""
    threading.Thread(
        target=_exit_when_orphaned, args=(parent,), name="storied-parent-watch", daemon=True
    ).start()


def _exit_when_orphaned(parent: int) -> None:
    event = threading.Event()
    while not event.wait(PARENT_POLL_INTERVAL):
        if os.getppid() != parent:
            logger.warning("Parent process %d is gone: exiting, with whatever was running", parent)
            logging.shutdown()
            os._exit(ORPHANED_EXIT_CODE)


def nanny_environ(env: dict[str, str], nanny_id: str, report_fd: int) -> dict[str, str]:
    """``env`` for a worker supervised by the nanny ``nanny_id``, reporting on ``report_fd``."""
    return {**env, NANNY_ENV_VAR: json.dumps({"id": nanny_id, "fd": report_fd})}


def supervising_nanny() -> dict[str, Any] | None:
    """The nanny over this process (``{"id", "fd"}``), taken out of the environment so that
    processes that tasks start do not think it is theirs; None without a nanny."""
    raw = os.environ.pop(NANNY_ENV_VAR, None)
    return json.loads(raw) if raw else None


def report_joined(nanny: dict[str, Any], worker: Any) -> None:
    """Tell the nanny that ``worker`` (started) has joined the scheduler."""
    try:
        os.write(nanny["fd"], json.dumps({"address": worker.address}).encode() + b"\n")
        os.close(nanny["fd"])
    except OSError as exc:  # the nanny is gone; the parent watch ends this process
        logger.warning("Could not report to the nanny: %s", exc)
