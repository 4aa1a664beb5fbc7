"""Which keys the coordination primitives keep alive on the cluster, counted per holder.

A held key is wanted by a pseudo-client named after its holder (``variable-x``, ``queue-q``,
``published-data``), exactly as a real client wants the keys of its futures; the scheduler
then keeps the key until the last holder lets go, even after the client that made it closed.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable


class KeyHolds:
    """Counts of each key per holder; says which keys newly start or stop being held."""

    def __init__(self) -> None:
        self._counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def hold(self, holder: str, keys: Iterable[str]) -> list[str]:
        """Hold ``keys`` once more each; returns those that were not held by ``holder``."""
        counts = self._counts[holder]
        new = []
        for key in keys:
            if not counts[key]:
                new.append(key)
            counts[key] += 1
        return new

    def release(self, holder: str, keys: Iterable[str]) -> list[str]:
        """Drop one hold on each of ``keys``; returns those ``holder`` no longer holds at all."""
        counts = self._counts.get(holder)
        if counts is None:
            return []
        gone = []
        for key in keys:
            if counts[key] <= 1:
                if counts.pop(key, 0):
                    gone.append(key)
            else:
                counts[key] -= 1
        if not counts:
            del self._counts[holder]
        return gone

    def held(self, holder: str) -> dict[str, int]:
        return dict(self._counts.get(holder, {}))
