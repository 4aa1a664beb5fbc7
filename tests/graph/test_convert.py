"""Converting a graph at the client: each task's payload stands alone, although one pickler
serves the whole graph."""

from __future__ import annotations

import operator
from typing import Any

import dask.array as da
import dask.bag as db
from dask._expr import FinalizeCompute
from dask._task_spec import Alias, DataNode, Task, TaskRef
from dask.base import collections_to_expr
from dask.core import flatten

from storied.graph.convert import GraphTasks, alias_targets, to_tasks
from storied.graph.execute import GraphRunner
from storied.graph.keys import stringify
from storied.protocol.serialize import loads_with_refs, pickle_loads


def inc(x: int) -> int:
    return x + 1


def is_even(x: int) -> bool:
    return x % 2 == 0


def converted(collection: Any) -> GraphTasks:
    expr = FinalizeCompute(collections_to_expr([collection])).optimize()
    return to_tasks(expr, list(flatten(expr.__dask_keys__())), {})


def optimized_graph(collection: Any) -> dict[Any, Any]:
    return dict(collections_to_expr([collection]).optimize().__dask_graph__())


def run(graph: GraphTasks) -> dict[str, Any]:
    """Every task's result, each run from its payload alone, as a worker runs it (the tasks
    come in dask.order order: inputs first)."""
    runner: GraphRunner = pickle_loads(graph.function)
    results: dict[str, Any] = {}
    for key, _, payload, dependencies, *_ in graph.tasks:
        inputs = {dep: results[dep] for dep in dependencies}
        args, kwargs = loads_with_refs(payload, inputs)
        results[key] = runner(*args, **kwargs)
    return results


def test_every_payload_unpickles_on_its_own_and_runs_its_node():
    """Nodes share functions and classes: a pickler whose memo leaked from one node into the
    next would leave references to objects the worker never saw in that payload."""
    x = da.arange(16, chunks=4)
    graph = converted((x + 1).sum())
    assert run(graph)[graph.tasks[-1][0]] == sum(range(1, 17))


def test_an_alias_nobody_asked_for_is_no_task_its_dependents_read_its_target():
    """dask's fusion leaves one alias per fused chain (a bag's ``sum-part`` of each partition):
    running them would cost a task, a scheduler round trip and maybe a transfer each."""
    graph = {
        "a": DataNode("a", 5),
        "b": Task("b", inc, TaskRef("a")),
        "c": Alias("c", "b"),
        "d": Alias("d", "c"),
        "e": Task("e", operator.mul, TaskRef("d"), TaskRef("c")),
    }
    converted_graph = to_tasks(graph, ["e"], {})
    tasks = {entry[0]: entry for entry in converted_graph.tasks}
    assert sorted(tasks) == ["a", "b", "e"]
    assert tasks["e"][3] == ["b"]
    assert run(converted_graph)["e"] == 36


def test_an_alias_asked_for_stays_a_task():
    graph = {"a": DataNode("a", 5), "c": Alias("c", "a"), "d": Alias("d", "c")}
    converted_graph = to_tasks(graph, ["d"], {})
    tasks = {entry[0]: entry for entry in converted_graph.tasks}
    assert sorted(tasks) == ["a", "d"]
    assert tasks["d"][3] == ["a"]  # through the chain: c is no task
    assert run(converted_graph)["d"] == 5


def test_a_bags_reduction_reads_the_fused_partitions_directly():
    total = db.from_sequence(range(1_000), npartitions=10).map(inc).filter(is_even).sum()
    graph = converted(total)
    aliases = [key for key, node in optimized_graph(total).items() if type(node) is Alias]
    assert len(aliases) == 10
    assert {entry[0] for entry in graph.tasks}.isdisjoint(map(stringify, aliases))
    assert run(graph)[graph.tasks[-1][0]] == sum(x for x in range(1, 1_001) if x % 2 == 0)


def test_alias_targets_follow_chains_and_stop_at_a_cycle():
    graph = {
        "a": DataNode("a", 1),
        "b": Alias("b", "a"),
        "c": Alias("c", "b"),
        "x": Alias("x", "y"),
        "y": Alias("y", "x"),
        "held": Alias("held"),  # a future's key, its own target
    }
    assert alias_targets(graph) == {"b": "a", "c": "a", "x": "x", "y": "y", "held": "held"}
