"""Failures on the record: why a task failed, each attempt, and who else failed with it.

The scheduler calls ``record_failure`` once a worker reports a task raised. Failures are rare,
so this runs apart from the transition hot path, which stays as cheap as ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from storied.record import Record
from storied.scheduler.state import TaskState

logger = logging.getLogger("storied.scheduler")

#: event topics: a failed attempt that will be retried, and a task that erred for good
RETRIED_TOPIC = "retried"
ERRED_TOPIC = "erred"


def split_error_text(text: str | None) -> tuple[str, str]:
    """``("ZeroDivisionError", "division by zero")`` from ``"ZeroDivisionError: division by
    zero"``, the ``text`` of an error payload."""
    exception_type, _, message = (text or "Exception").partition(": ")
    return exception_type, message


def record_failure(
    record: Record,
    log_event: Callable[[str, dict[str, Any]], None],
    ts: TaskState,
    worker: str,
    error: dict[str, Any],
    stimulus_id: str,
    startstops: list[float] | None,
) -> None:
    """Record one failed attempt of ``ts`` (just handled by the state machine), and when it
    erred for good, every dependent that erred because of it, naming it as ``blame``."""
    exception_type, message = split_error_text(error.get("text"))
    start, stop = (startstops[0], startstops[1]) if startstops else (None, None)
    outcome = "erred" if ts.state == "erred" else "retried"
    now = time.time()
    failure = {
        "key": ts.key,
        "stimulus_id": stimulus_id,
        "timestamp": now,
        "outcome": outcome,
        "attempt": ts.failed_attempts,
        "worker": worker,
        "start": start,
        "stop": stop,
        "exception_type": exception_type,
        "message": message,
        "traceback": error.get("traceback_text"),
        "blame": None,
    }
    record.failure(failure)
    duration = None if start is None or stop is None else stop - start
    event = {
        "key": ts.key,
        "exception": error.get("text"),
        "exception_type": exception_type,
        "traceback": error.get("traceback_text"),
        "worker": worker,
        "attempt": ts.failed_attempts,
        "duration": duration,
    }
    if outcome == "retried":
        logger.info(
            "Task %s failed attempt %d on %s, retrying: %s",
            ts.key,
            ts.failed_attempts,
            worker,
            error.get("text"),
        )
        log_event(RETRIED_TOPIC, {"action": "task-retried", **event})
        return
    blamed = _blamed_dependents(ts)
    logger.warning("Task %s erred on %s: %s", ts.key, worker, error.get("text"))
    log_event(ERRED_TOPIC, {"action": "task-erred", **event, "dependents": len(blamed)})
    for dependent in blamed:
        record.failure(
            {
                **failure,
                "key": dependent.key,
                "attempt": None,
                "worker": None,
                "start": None,
                "stop": None,
                "blame": ts.key,
            }
        )


def _blamed_dependents(root: TaskState) -> list[TaskState]:
    """Tasks downstream of ``root`` that are erred and name it as the cause."""
    found: list[TaskState] = []
    seen = {root}
    todo = list(root.dependents)
    while todo:
        ts = todo.pop()
        if ts in seen:
            continue
        seen.add(ts)
        if ts.state == "erred" and (ts.error or {}).get("blame") == root.key:
            found.append(ts)
            todo.extend(ts.dependents)
    found.sort(key=lambda ts: ts.key)
    return found
