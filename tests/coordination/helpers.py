"""Shared by the coordination tests; pickled by value, as worker processes cannot import it."""

from __future__ import annotations

import sys

import cloudpickle

from storied import get_worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Counter:
    """Dask's actor example."""

    n = 0

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n

    def add(self, x: int) -> int:
        self.n += x
        return self.n

    def where(self) -> str:
        return get_worker().address


class Relay:
    """An actor that calls another actor: on the same worker, that must not wait for itself."""

    def bump(self, counter: Counter) -> int:
        return counter.increment().result(timeout=10) + counter.n
