"""The task stream as Dask gives it: one dict per task execution, from the record's executions."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storied.config import parse_timedelta
from storied.dashboard.views import key_prefix

if TYPE_CHECKING:
    from storied.client.client import Client

#: the record's execution outcome -> Dask's task stream ``status``
STATUS = {"memory": "OK", "erred": "error"}


def task_stream_entry(execution: Mapping[str, Any]) -> dict[str, Any]:
    """One execution in Dask's shape: ``key``, ``name`` (the key's prefix), ``worker``,
    ``thread``, ``status`` ("OK"/"error") and ``startstops`` (one ``compute`` span)."""
    return {
        "key": execution["key"],
        "name": key_prefix(execution["key"]),
        "worker": execution["worker"],
        "thread": execution["thread"],
        "status": STATUS.get(execution["outcome"], execution["outcome"]),
        "startstops": [
            {"action": "compute", "start": execution["start"], "stop": execution["stop"]}
        ],
    }


def select(
    executions: list[dict[str, Any]],
    start: float | str | None = None,
    stop: float | str | None = None,
    count: int | None = None,
) -> list[dict[str, Any]]:
    """Dask's ``get_task_stream`` window over executions ordered by when they stopped.

    ``start``/``stop``: a time (``time.time()``) or a duration before now (``"60s"``), bounds on
    when a task stopped; ``count``: that many, the newest (or the first after ``start``).
    """
    ordered = sorted(executions, key=lambda execution: execution["stop"])
    stops = [execution["stop"] for execution in ordered]
    low = None if start is None else _position(stops, _when(start, "start"))
    high = None if stop is None else _position(stops, _when(stop, "stop"))
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TypeError(f"count must be a non-negative int or None, not {count!r}")
        if low is None:
            high = len(ordered) if high is None else high
            low = high - count
        elif high is None:
            high = low + count
    low = max(0, 0 if low is None else low)
    high = min(len(ordered), len(ordered) if high is None else high)
    return [task_stream_entry(execution) for execution in ordered[low:high]]


def refuse_plot(plot: bool | str) -> None:
    """Dask's ``plot=True``/``"save"`` makes a Bokeh figure; storied draws none."""
    if plot:
        raise ValueError(
            "storied draws no Bokeh figures (plot must be False): for a task stream chart, "
            "wrap the work in storied.performance_report(filename) and open that HTML file"
        )


def _when(value: float | str, name: str) -> float:
    if isinstance(value, str):
        return time.time() - (parse_timedelta(value) or 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(
        f"{name} must be a time (time.time()) or a duration before now like '60s', not {value!r}"
    )


def _position(stops: list[float], target: float) -> int:
    """How many executions stopped before ``target``."""
    return bisect_left(stops, target)


class get_task_stream:
    """Collect the task stream of what runs inside the block, as Dask's ``get_task_stream``::

    with get_task_stream() as ts:
        x.compute()
    ts.data  # [{"key": ..., "worker": ..., "startstops": [...], ...}, ...]
    """

    data: list[dict[str, Any]]

    def __init__(self, client: Client | None = None, plot: bool | str = False) -> None:
        from storied.client.current import default_client

        refuse_plot(plot)
        self.data = []
        self.client = client if client is not None else default_client()
        self._since: int | None = None

    def __enter__(self) -> get_task_stream:
        self._since = self.client._sync(self.client._request, "executions-recorded")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.data = self.client._sync(_entries_since, self.client, self._since)

    async def __aenter__(self) -> get_task_stream:
        self._since = await self.client._request("executions-recorded")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.data = await _entries_since(self.client, self._since)


async def _entries_since(client: Client, since: int | None) -> list[dict[str, Any]]:
    executions = await client._request("executions", since=since)
    return [task_stream_entry(execution) for execution in executions]


async def task_stream(
    client: Client, start: float | str | None, stop: float | str | None, count: int | None
) -> list[dict[str, Any]]:
    """``Client.get_task_stream``: the executions the scheduler holds, in Dask's window."""
    return select(await client._request("executions"), start, stop, count)
