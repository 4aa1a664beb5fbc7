"""``Client.get_events`` reads a topic page by page (``storied.scheduler.record_pages``), so
the scheduler holds one page at a time however many events the topic has; here the pages are
put together, oldest first, and the read's window (``limit``, ``since``, ``until``) checked."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

Request = Callable[..., Awaitable[Any]]


def check_window(
    limit: object, since: object, until: object
) -> tuple[int | None, float | None, float | None]:
    """``limit`` a non-negative int; ``since``/``until`` epoch seconds or datetimes."""
    if limit is not None and (type(limit) is not int or limit < 0):
        raise TypeError(f"limit must be a non-negative int or None, not {limit!r}")
    return limit, _timestamp("since", since), _timestamp("until", until)


def _timestamp(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(
        f"{name} must be a time in seconds since the epoch (time.time()) or a datetime, "
        f"not {value!r}"
    )


async def read_events(
    request: Request,
    topic: str | None,
    detail: bool,
    limit: int | None,
    since: float | None,
    until: float | None,
) -> Any:
    """As ``Client.get_events`` returns them: ``((timestamp, msg), ...)`` for a topic, a dict
    of those per topic for ``topic=None``; with ``detail`` dicts with seq, topic, timestamp,
    msg and source, in lists."""
    if topic is not None:
        return await _read_topic(request, topic, detail, limit, since, until)
    found = {}
    for name in await request("event-topics"):
        events = await _read_topic(request, name, detail, limit, since, until)
        if events:
            found[name] = events
    return found


async def _read_topic(
    request: Request,
    topic: str,
    detail: bool,
    limit: int | None,
    since: float | None,
    until: float | None,
) -> Any:
    """Pages newest first, each below the oldest seq of the one before, until an empty page
    or ``limit`` events."""
    pages: list[list[list[Any]]] = []
    count = 0
    before_seq = None
    while limit is None or count < limit:
        page = await request(
            "events-page",
            topic=topic,
            before_seq=before_seq,
            since=since,
            until=until,
            limit=None if limit is None else limit - count,
        )
        if not page:
            break
        pages.append(page)
        count += len(page)
        before_seq = page[0][0]
    events = [event for page in reversed(pages) for event in page]
    if detail:
        return [
            {"seq": seq, "topic": topic, "timestamp": timestamp, "msg": msg, "source": source}
            for seq, timestamp, msg, source in events
        ]
    return tuple((timestamp, msg) for _, timestamp, msg, _ in events)
