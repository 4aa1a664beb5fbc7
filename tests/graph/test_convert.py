"""Converting a graph at the client: each task's payload stands alone, although one pickler
serves the whole graph."""

from __future__ import annotations

from typing import Any

import dask.array as da
from dask._expr import FinalizeCompute
from dask.base import collections_to_expr
from dask.core import flatten

from storied.graph.convert import GraphTasks, to_tasks
from storied.graph.execute import GraphRunner
from storied.protocol.serialize import loads_with_refs, pickle_loads


def converted(collection: Any) -> GraphTasks:
    expr = FinalizeCompute(collections_to_expr([collection])).optimize()
    return to_tasks(expr, list(flatten(expr.__dask_keys__())), {})


def test_every_payload_unpickles_on_its_own_and_runs_its_node():
    """Nodes share functions and classes: a pickler whose memo leaked from one node into the
    next would leave references to objects the worker never saw in that payload."""
    x = da.arange(16, chunks=4)
    graph = converted((x + 1).sum())
    runner: GraphRunner = pickle_loads(graph.function)
    results: dict[str, Any] = {}
    for key, _, payload, dependencies, *_ in graph.tasks:  # in dask.order order: inputs first
        inputs = {dep: results[dep] for dep in dependencies}
        args, kwargs = loads_with_refs(payload, inputs)
        results[key] = runner(*args, **kwargs)
    assert results[graph.tasks[-1][0]] == sum(range(1, 17))
