"""What a worker runs for one dask task; kept apart so workers import no client code."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Sequence
from typing import Any


class GraphRunner:
    """The storied function of every task of one submitted graph.

    It carries the graph's Python functions, pickled once for the whole graph (a worker caches
    the runner like any task function), so each task's node travels without them and refers to
    them by index; a storied future embedded in a node refers to its result in ``values``.
    """

    def __init__(self, functions: Sequence[Callable[..., Any]]) -> None:
        self.functions = list(functions)

    def __call__(self, node: bytes, values: dict[Any, Any]) -> Any:
        """Unpickle one dask ``GraphNode`` and run it on its dependencies' results (by key)."""
        functions = self.functions

        def persistent_load(reference: int | str) -> Any:
            return functions[reference] if type(reference) is int else values[reference]

        unpickler = pickle.Unpickler(io.BytesIO(node))
        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
        return unpickler.load()(values)
