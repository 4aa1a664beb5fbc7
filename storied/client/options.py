"""Dask's submit options (``workers``, ``resources``, ``priority``, ...), checked at the caller.

Options a ``dask.annotate(...)`` block around the call sets apply too, as in Dask: an option
given to the call itself (and not empty) wins. What passes becomes the task entry's
``retries``, ``restrictions`` and ``options`` on the wire
(``[key, function_id, payload, deps, retries, restrictions, options]``); ``options`` is None
unless an option is given, else one dict shared by every task of the call.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

from storied import config
from storied.resources import check_resources


class TaskOptions(NamedTuple):
    retries: int
    restrictions: list[str] | None
    #: the wire's options dict (None when no option is given)
    options: dict[str, Any] | None
    #: seconds: submissions this close together share a priority generation
    fifo_timeout: float


def task_options(
    workers: Any,
    resources: Any,
    retries: Any,
    priority: Any,
    allow_other_workers: Any,
    fifo_timeout: Any,
) -> TaskOptions:
    """Check a submit/map call's options and turn them into what goes on the wire.

    Raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a wrong value
    (such as ``allow_other_workers`` without ``workers``), as Dask does.
    """
    annotated = _dask_annotations()
    if annotated:
        workers = workers or annotated.get("workers")
        resources = resources or annotated.get("resources")
        retries = retries or annotated.get("retries")
        priority = priority or annotated.get("priority", 0)
        allow_other_workers = allow_other_workers or annotated.get("allow_other_workers", False)
    if retries is None:
        retries = 0
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TypeError(f"retries must be a non-negative int or None, not {retries!r}")
    if isinstance(priority, bool) or not isinstance(priority, int | float):
        raise TypeError(f"priority must be a number (higher runs first), not {priority!r}")
    if allow_other_workers not in (True, False, None):
        raise TypeError(f"allow_other_workers= must be True or False, not {allow_other_workers!r}")
    if allow_other_workers and workers is None:
        raise ValueError("Only use allow_other_workers= if using workers=")
    try:
        fifo_seconds = config.parse_timedelta(fifo_timeout)
    except ValueError as exc:
        raise ValueError(f"fifo_timeout: {exc}") from None
    if fifo_seconds is None:
        raise TypeError("fifo_timeout must be a duration such as '100ms' or a number of seconds")
    options: dict[str, Any] = {}
    if priority:
        options["priority"] = priority
    if resources is not None:
        needed = check_resources(resources)
        if needed:
            options["resources"] = needed
    restrictions = worker_restrictions(workers)
    if allow_other_workers and restrictions is not None:
        options["loose"] = True
    return TaskOptions(retries, restrictions, options or None, fifo_seconds)


def worker_restrictions(workers: Any) -> list[str] | None:
    """Worker addresses or names from one of them or a collection of them (None: any worker)."""
    if workers is None:
        return None
    if isinstance(workers, str | int) and not isinstance(workers, bool):
        return [str(workers)]
    if isinstance(workers, Iterable) and not isinstance(workers, bytes | dict):
        names = [str(w) for w in workers]
        return names or None
    raise TypeError(f"workers must be an address, a name or a list of them, not {workers!r}")


def _dask_annotations() -> dict[str, Any]:
    """The annotations of the ``dask.annotate`` blocks around the caller (none if dask was
    never imported: nobody can have opened one)."""
    dask = sys.modules.get("dask")
    get_annotations = getattr(dask, "get_annotations", None)
    return get_annotations() if get_annotations is not None else {}
