"""Task executions as a Chrome trace / Perfetto timeline: one track per worker thread."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def chrome_trace(executions: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Build ``{"traceEvents": [...]}`` from execution records.

    Each execution needs ``key``, ``worker``, ``thread``, ``start``, ``stop`` (seconds since the
    epoch) and ``outcome``. Workers become processes and their threads become threads; both get
    small integer ids, since trace viewers expect numbers, and are named by metadata events.
    """
    worker_pids: dict[str, int] = {}
    thread_tids: dict[tuple[str, int], int] = {}
    metadata: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    for execution in executions:
        worker, thread = execution["worker"], execution["thread"]
        pid = worker_pids.get(worker)
        if pid is None:
            pid = worker_pids[worker] = len(worker_pids) + 1
            metadata.append(_name_event("process_name", pid, 0, worker))
        tid = thread_tids.get((worker, thread))
        if tid is None:
            tid = thread_tids[(worker, thread)] = len(thread_tids) + 1
            metadata.append(_name_event("thread_name", pid, tid, f"thread {thread}"))
        duration = execution["stop"] - execution["start"]
        slices.append(
            {
                "name": execution["key"],
                "cat": "task",
                "ph": "X",
                "pid": pid,
                "tid": tid,
                "ts": execution["start"] * 1e6,
                "dur": duration * 1e6,
                "args": {
                    "key": execution["key"],
                    "outcome": execution["outcome"],
                    "duration": duration,
                },
            }
        )
    return {"traceEvents": metadata + slices, "displayTimeUnit": "ms"}


def _name_event(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
