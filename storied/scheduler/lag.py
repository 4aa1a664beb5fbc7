"""How far behind its workers the scheduler runs, for sizing the queued tasks' backlog.

A worker stamps each finished task with its own clock; the scheduler hears of it when its loop
gets to the message. When the scheduler is the busy one (tasks of microseconds, a garbage
collection, a large graph arriving), that delay grows to tens or hundreds of milliseconds, and
a worker filled from the queue only when the scheduler sees it half empty has by then run dry:
measured on map(10,000) of no-op tasks, workers idled 100-600 ms at a time until their refill
came, while with every task sent at once they ran on. ``SchedulerState`` stretches a worker's
backlog to cover twice the longest recent delay (see ``worker_backlog``).

Each worker's clock may be offset from the scheduler's: a delay counts from the quickest
report seen from that worker, so a constant offset (and the fastest delivery) drops out; if a
worker's first reports all come late, its delays are undercounted, and the backlog is only
``worker-backlog``'s, as before. The figure moves only with reports: after a quiet spell the
next graph's first fill still uses the last one (bounded by ``MAX_LAG``). Pure: the caller
gives the times.
"""

from __future__ import annotations

import math

#: seconds over which the longest delay is remembered (this window and the one before)
WINDOW = 1.0
#: the longest delay counted (seconds): the backlog it buys stays bounded
MAX_LAG = 0.1


class ReportLag:
    """The longest delay, over the last one or two ``WINDOW``s, between a worker finishing a
    task and the scheduler handling its report."""

    __slots__ = ("_current", "_fastest", "_previous", "_window_start")

    def __init__(self) -> None:
        #: worker -> the shortest (handled - finished) seen from it: clock offset + delivery
        self._fastest: dict[str, float] = {}
        self._window_start = -math.inf
        self._current = 0.0
        self._previous = 0.0

    @property
    def seconds(self) -> float:
        return self._current if self._current > self._previous else self._previous

    def note(self, worker: str, finished: float, now: float) -> None:
        """``worker`` finished a task at ``finished`` (its clock) and it is handled ``now``."""
        delay = now - finished
        fastest = self._fastest.get(worker)
        if fastest is None or delay < fastest:
            self._fastest[worker] = fastest = delay
        elapsed = now - self._window_start
        if elapsed >= WINDOW:
            # the window that just ended is remembered only if nothing lies between
            self._previous = self._current if elapsed < 2 * WINDOW else 0.0
            self._current = 0.0
            self._window_start = now
        lag = delay - fastest
        if lag > self._current:
            self._current = lag if lag < MAX_LAG else MAX_LAG

    def forget(self, worker: str) -> None:
        """``worker`` left (an address may come back with another clock)."""
        self._fastest.pop(worker, None)
