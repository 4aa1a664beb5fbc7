"""What a worker runs for one dask task; kept apart so workers import no client code."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable, Sequence
from typing import Any

#: what the node being unpickled on this thread refers to
_unpickling = threading.local()


def resolve_function(index: int) -> Callable[..., Any]:
    """A node's Python function, from the table of the graph being run (while unpickling)."""
    return _unpickling.functions[index]


def resolve_future(key: str) -> Any:
    """The result of a storied future a node embeds (while unpickling)."""
    return _unpickling.values[key]


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
        _unpickling.functions, _unpickling.values = self.functions, values
        try:
            graph_node = pickle.loads(node)
        finally:
            _unpickling.functions = _unpickling.values = None
        return graph_node(values)


def preload_dask() -> None:
    """Import dask's task classes and numpy now, if installed, so that the first graph a fresh
    worker runs does not wait for the imports (Dask's workers import both when they start)."""
    with contextlib.suppress(ImportError):
        import dask._task_spec  # noqa: F401
    with contextlib.suppress(ImportError):
        import numpy  # noqa: F401
