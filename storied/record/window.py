"""Time windows of reads of the record, ``[since, until)``, as people type them.

The CLI (``--since``/``--until``) and the dashboard's API (``?since=``/``?until=``) read them
with this one parser, so the two accept the same forms and refuse the same mistakes. A time is
seconds since the epoch or an ISO 8601 date/time; one without a zone is read in the zone its
reader shows times in: local time in the CLI, UTC in the dashboard.
"""

from __future__ import annotations

import datetime
import math

#: What a time may be, as an error tells it.
ACCEPTED = (
    "seconds since the epoch (e.g. 1796126400 or 1796126400.25) or an ISO 8601 date/time "
    "(e.g. 2026-12-01, 2026-12-01T18:30:00, 2026-12-01 18:30:00.250+00:00)"
)


class BadTime(ValueError):
    """A bound of a window that is not a time, or a window that ends before it starts."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        #: which bound is wrong: ``since`` or ``until``
        self.parameter = parameter
        self.accepted = ACCEPTED


def parse_time(
    parameter: str, text: str | None, naive_zone: datetime.tzinfo | None = None
) -> float | None:
    """``text`` as seconds since the epoch (None or "" for no bound); an ISO 8601 time without
    a zone is in ``naive_zone`` (None: the local time)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            message = f"{parameter}={text!r} is not a time: use {ACCEPTED}"
            raise BadTime(parameter, message) from None
        if moment.tzinfo is None and naive_zone is not None:
            moment = moment.replace(tzinfo=naive_zone)
        try:
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):  # local time has no offset that far out
            message = f"{parameter}={text!r} is out of the range of times: use {ACCEPTED}"
            raise BadTime(parameter, message) from None
    if not math.isfinite(seconds):
        raise BadTime(parameter, f"{parameter}={text!r} is not a finite time: use {ACCEPTED}")
    return seconds


def parse_window(
    since: str | None, until: str | None, naive_zone: datetime.tzinfo | None = None
) -> tuple[float | None, float | None]:
    """``(since, until)`` in seconds since the epoch, each None when not given; ``until``
    before ``since`` is refused (the window would hold nothing by mistake)."""
    start = parse_time("since", since, naive_zone)
    end = parse_time("until", until, naive_zone)
    if start is not None and end is not None and end < start:
        raise BadTime(
            "until",
            f"until={until!r} is before since={since!r}: the window [since, until) would be "
            "empty; give an until at or after since",
        )
    return start, end


def within(timestamp: float, since: float | None, until: float | None) -> bool:
    """Whether ``timestamp`` falls in ``[since, until)`` (an absent bound does not limit)."""
    return (since is None or timestamp >= since) and (until is None or timestamp < until)
