"""Joining failures to the story: the transition a failure caused carries it.

Failures are kept apart from transitions (they are rare, and transitions must stay cheap to
record); a story is joined with them when it is read. A failure is matched to the first
scheduler transition of its run and key with its stimulus id: the move to ``erred``, or back
to ``released`` for a retry (which goes on to ``waiting`` and ``processing`` under the same
stimulus), or, for a dependent erring because of it, that dependent's move to ``erred``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def explain_story(entries: Iterable[dict[str, Any]], failures: Iterable[dict[str, Any]]) -> None:
    """Add ``"failure"`` to the entries (story dicts with ``run_id``, in time order) that a
    failure caused; the others get None."""
    by_cause = {(f["run_id"], f["key"], f["stimulus_id"]): f for f in failures}
    for entry in entries:
        entry["failure"] = (
            by_cause.pop((entry["run_id"], entry["key"], entry["stimulus_id"]), None)
            if entry["where"] == "scheduler"
            else None
        )


def failure_text(failure: dict[str, Any]) -> str:
    """A failure as a story shows it: what failed where, then the traceback."""
    if failure["blame"] is not None:
        return (
            f"erred because {failure['blame']} did: "
            f"{failure['exception_type']}: {failure['message']}"
        )
    took = (
        f" after {failure['stop'] - failure['start']:.3f} s"
        if failure["start"] is not None and failure["stop"] is not None
        else ""
    )
    head = (
        f"attempt {failure['attempt']} on {failure['worker']}{took} {failure['outcome']}: "
        f"{failure['exception_type']}: {failure['message']}"
    )
    return head + ("\n" + failure["traceback"].rstrip() if failure["traceback"] else "")
