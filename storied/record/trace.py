"""Task executions as a Chrome trace / Perfetto timeline: one track per worker thread.

Besides the executions, a trace can show what befell the workers: data transfers as slices on
a ``transfers`` track of the receiving worker, and each worker's removal (why, and what it
took with it) as a marker. A failed attempt is coloured red, and orange when it was retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: Chrome's trace viewer colours (``cname``) by what became of an execution
_COLOURS = {"memory": "good", "erred": "terrible", "retried": "bad"}


class _Tracks:
    """Small integer ids for workers (processes) and their tracks (threads), named as they
    are first met, since trace viewers expect numbers."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[str, object], int] = {}
        self.metadata: list[dict[str, Any]] = []

    def pid(self, worker: str) -> int:
        pid = self.pids.get(worker)
        if pid is None:
            pid = self.pids[worker] = len(self.pids) + 1
            name = self.names.get(worker)
            label = worker if name is None or name == worker else f"{worker} ({name})"
            self.metadata.append(_name_event("process_name", pid, 0, label))
        return pid

    def tid(self, worker: str, track: object, label: str) -> int:
        tid = self.tids.get((worker, track))
        if tid is None:
            tid = self.tids[(worker, track)] = len(self.tids) + 1
            self.metadata.append(_name_event("thread_name", self.pid(worker), tid, label))
        return tid


def chrome_trace(
    executions: Iterable[Mapping[str, Any]],
    *,
    names: Mapping[str, str] | None = None,
    transfers: Iterable[Mapping[str, Any]] = (),
    removals: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Build ``{"traceEvents": [...]}`` from execution records.

    Each execution needs ``key``, ``worker``, ``thread``, ``start``, ``stop`` (seconds since the
    epoch) and ``outcome``. Workers become processes, labelled with their ``names`` (address
    -> name) where known, and their threads become threads. ``transfers``: ``key``,
    ``worker`` (the receiver), ``start`` and ``stop``. ``removals``: ``remove-worker`` events'
    messages with their ``time``.
    """
    executions = list(executions)
    tracks = _Tracks(names or {})
    slices: list[dict[str, Any]] = []
    last_start: dict[str, float] = {}
    for execution in executions:
        last_start[execution["key"]] = max(
            last_start.get(execution["key"], execution["start"]), execution["start"]
        )
    for execution in executions:
        worker, thread, key = execution["worker"], execution["thread"], execution["key"]
        outcome = execution["outcome"]
        if outcome == "erred" and last_start[key] > execution["start"]:
            outcome = "retried"  # the task ran again after this attempt
        duration = execution["stop"] - execution["start"]
        args = {"key": key, "outcome": outcome, "duration": duration}
        if execution.get("exception_type"):
            args["exception"] = f"{execution['exception_type']}: {execution.get('message', '')}"
        slices.append(
            {
                "name": key,
                "cat": "task",
                "ph": "X",
                "pid": tracks.pid(worker),
                "tid": tracks.tid(worker, thread, f"thread {thread}"),
                "ts": execution["start"] * 1e6,
                "dur": duration * 1e6,
                "cname": _COLOURS.get(outcome, "grey"),
                "args": args,
            }
        )
    for transfer in transfers:
        worker = transfer["worker"]
        slices.append(
            {
                "name": transfer["key"],
                "cat": "transfer",
                "ph": "X",
                "pid": tracks.pid(worker),
                "tid": tracks.tid(worker, "transfers", "transfers"),
                "ts": transfer["start"] * 1e6,
                "dur": (transfer["stop"] - transfer["start"]) * 1e6,
                "cname": "generic_work",
                "args": {"key": transfer["key"], "duration": transfer["stop"] - transfer["start"]},
            }
        )
    for removal in removals:
        lost = {
            field: removal.get(field, [])
            for field in ("processing-tasks", "lost-computed-tasks", "lost-scattered-tasks")
        }
        slices.append(
            {
                "name": f"worker removed: {removal.get('cause', removal.get('reason'))}",
                "cat": "worker-loss",
                "ph": "i",
                "s": "p",
                "pid": tracks.pid(removal["worker"]),
                "tid": 0,
                "ts": removal["time"] * 1e6,
                "cname": "terrible",
                "args": {"reason": removal.get("reason"), **lost},
            }
        )
    return {"traceEvents": tracks.metadata + slices, "displayTimeUnit": "ms"}


def _name_event(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
