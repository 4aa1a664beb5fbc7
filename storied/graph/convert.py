"""Turn a dask graph into storied task entries, once, at the client.

Every dask ``GraphNode`` becomes one storied task whose function is the graph's ``GraphRunner``
and whose arguments are ``(node, values)``: the node pickled on its own, its Python functions
replaced by indices into the runner's table (a function defined in ``__main__`` is pickled once
per graph, not once per task), and ``values`` mapping each dependency's dask key to a reference
that the worker replaces with that dependency's result while unpickling (as it does for futures
passed to ``submit``). Tasks are sent in ``dask.order`` order, so the scheduler's priorities
follow dask's memory-friendly order. An ``Alias`` node nobody asked for is no task: its
dependents read its target's result (``alias_targets``).
"""

from __future__ import annotations

import io
import pickle
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from storied.client.future import Future
from storied.graph.execute import GraphRunner, resolve_function, resolve_future
from storied.graph.keys import stringify
from storied.graph.literals import convert_graph, optimize_with_literals
from storied.protocol.serialize import (
    OUT_OF_BAND_MIN,
    PICKLE_PROTOCOL,
    Pickled,
    dumps_with_refs,
    pickle_dumps,
    token,
)

#: annotations (from ``dask.annotate``, collections or call arguments) that storied honours
ANNOTATIONS = ("priority", "retries", "resources", "workers", "allow_other_workers")


def import_dask() -> Any:
    """``dask``, or an ImportError that says how to get it."""
    try:
        import dask
    except ImportError as exc:
        raise ImportError(
            "computing dask collections and graphs on storied needs dask: "
            "pip install 'storied[dask]'"
        ) from exc
    return dask


class _Dependency:
    """Stands for one dependency's result in a task's pickled arguments."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


def _dependency_key(obj: Any) -> str | None:
    return obj.key if type(obj) is _Dependency else None


def _emptied(buffer: io.BytesIO, pickler: pickle.Pickler) -> io.BytesIO:
    """``buffer`` emptied and ``pickler``'s memo cleared, for the next pickle of its own."""
    buffer.seek(0)
    buffer.truncate()
    pickler.clear_memo()
    return buffer


class _ArgumentsPickler:
    """Pickles each task's ``((node, values), {})``, each ``_Dependency`` a reference the worker
    fills in with that dependency's result (one C pickler for the graph: values holds keys and
    references). A node embedding large data goes the way of large arguments: out of band,
    beside the message, which stays small."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler = pickle.Pickler(self._buffer, protocol=PICKLE_PROTOCOL)
        self._pickler.persistent_id = _dependency_key  # type: ignore[method-assign]

    def dumps(self, node: bytes, values: dict[Any, _Dependency]) -> bytes | Pickled:
        if len(node) >= OUT_OF_BAND_MIN:
            return dumps_with_refs(((node, values), {}), _dependency_key)[0]
        buffer = _emptied(self._buffer, self._pickler)
        self._pickler.dump(((node, values), {}))
        return buffer.getvalue()


_RESOLVERS = (resolve_function, resolve_future)


class _NodeReducer:
    """Takes a node's Python functions out into one table shared by the graph, and turns the
    storied futures it embeds into references to their results (``reducer_override`` is not
    called for ints, floats and strings, so large literal data costs no Python call each)."""

    def __init__(self) -> None:
        self.functions: list[Callable[..., Any]] = []
        self._index: dict[int, int] = {}
        #: keys of the futures met in the node being pickled
        self.futures: list[str] = []
        #: one pickler for every node of the graph (making one per node costs a few % of a
        #: conversion), its memo cleared between nodes: each pickle stands alone
        self._buffer = io.BytesIO()
        self._pickler = _FastPickler(self._buffer, self)

    def reduce(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is types.FunctionType and obj not in _RESOLVERS:
            index = self._index.get(id(obj))
            if index is None:
                index = self._index[id(obj)] = len(self.functions)
                self.functions.append(obj)
            return resolve_function, (index,)
        if kind is Future:
            self.futures.append(obj.key)
            return resolve_future, (obj.key,)
        return NotImplemented

    def dumps(self, node: Any) -> bytes:
        """``node`` pickled by the C pickler where it can, else by cloudpickle."""
        self.futures = []
        buffer = _emptied(self._buffer, self._pickler)
        try:
            self._pickler.dump(node)
        except (pickle.PicklingError, AttributeError, TypeError):
            self.futures = []
            buffer = io.BytesIO()
            _CloudPickler(buffer, self).dump(node)
        return buffer.getvalue()


class _FastPickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, reducer: _NodeReducer) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self.reducer_override = reducer.reduce  # type: ignore[method-assign]


class _CloudPickler(cloudpickle.Pickler):
    def __init__(self, file: io.BytesIO, reducer: _NodeReducer) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self._node_reducer = reducer

    def reducer_override(self, obj: Any) -> Any:
        reduced = self._node_reducer.reduce(obj)
        return super().reducer_override(obj) if reduced is NotImplemented else reduced


@dataclass
class GraphTasks:
    """A converted graph: task entries for an ``update-graph`` message, and what they mean."""

    #: ``[key, function_id, payload, dependencies, retries, restrictions(, options)]``
    tasks: list[list[Any]] = field(default_factory=list)
    #: the storied key of every dask key asked for
    keys: dict[Any, str] = field(default_factory=dict)
    #: keys asked for that the graph does not compute (futures it refers to, or mistakes)
    absent: list[Any] = field(default_factory=list)
    #: the pickled ``GraphRunner`` every task names, and its id
    function_id: str = ""
    function: bytes = b""


def materialize(graph: Any) -> tuple[dict[Any, Any], dict[str, dict[Any, Any]], bool]:
    """``(nodes by dask key, annotations by kind, cull)`` for a plain dict, a HighLevelGraph or a
    dask expression (what ``dask.compute`` hands a scheduler). Plain dicts are culled to the keys
    asked for, as Dask does; expressions and HighLevelGraphs come culled already."""
    import_dask()
    from dask._expr import Expr, HLGExpr, LLGExpr
    from dask.highlevelgraph import HighLevelGraph

    cull = False
    if isinstance(graph, HighLevelGraph):
        graph = HLGExpr(graph)
    elif isinstance(graph, Mapping):
        graph, cull = LLGExpr(dict(graph)), True
    elif not isinstance(graph, Expr):
        raise TypeError(
            f"expected a dask graph (a dict, HighLevelGraph or dask expression), "
            f"not {type(graph).__name__}"
        )
    optimize_with_literals(graph)
    nodes = convert_graph(graph.__dask_graph__())
    return nodes, dict(graph.__dask_annotations__()), cull


def cull(nodes: Mapping[Any, Any], keys: Iterable[Any]) -> dict[Any, Any]:
    """Only the nodes ``keys`` need."""
    needed: dict[Any, Any] = {}
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key in needed or key not in nodes:
            continue
        needed[key] = node = nodes[key]
        stack.extend(node.dependencies)
    return needed


def to_tasks(
    graph: Any, keys: Iterable[Any], defaults: Mapping[str, Any], *, cull_graph: bool = False
) -> GraphTasks:
    """Task entries for every node of ``graph`` that ``keys`` need (culled here if
    ``cull_graph``, else as ``materialize`` says).

    ``defaults`` are the annotations given to the call (and by ``dask.annotate`` around it);
    a node's own annotations win over them.
    """
    from dask._task_spec import Alias
    from dask.order import order

    keys = list(keys)
    nodes, annotations, needs_cull = materialize(graph)
    if needs_cull or cull_graph:
        nodes = cull(nodes, keys)
    priorities = order(nodes) if len(nodes) > 1 else {}
    result = GraphTasks(keys={key: stringify(key) for key in keys})
    result.absent = [key for key in keys if key not in nodes]
    reducer = _NodeReducer()
    arguments = _ArgumentsPickler()
    placement = _Placement(annotations, defaults)
    aliases = alias_targets(nodes)
    asked = set(keys)
    for key in sorted(nodes, key=lambda k: priorities.get(k, 0)):
        node = nodes[key]
        storied_key = stringify(key)
        if type(node) is Alias and (key not in asked or stringify(node.target) == storied_key):
            continue  # its dependents read its target; or a future already holds this key
        values: dict[Any, Any] = {
            dep: _Dependency(stringify(aliases.get(dep, dep))) for dep in node.dependencies
        }
        pickled = reducer.dumps(node)
        for future_key in reducer.futures:
            values[future_key] = _Dependency(future_key)
        payload = arguments.dumps(pickled, values)
        dependencies = list(dict.fromkeys(dep.key for dep in values.values()))
        retries, workers, options = placement.of(key)
        entry = [storied_key, "", payload, dependencies, retries, workers]
        if options is not None:
            entry.append(options)
        result.tasks.append(entry)
    result.function = pickle_dumps(GraphRunner(reducer.functions))
    result.function_id = f"graph-{token(result.function)}"
    for entry in result.tasks:
        entry[1] = result.function_id
    return result


def alias_targets(nodes: Mapping[Any, Any]) -> dict[Any, Any]:
    """The key each ``Alias`` node of ``nodes`` stands for, followed through chains of aliases.

    An alias only hands its target's result on (dask's fusion makes one per fused chain, so a
    bag's reduction has as many aliases as partitions): its dependents read the target's result
    directly, and an alias nobody asked for costs no task, no scheduler round trip, and no
    transfer to the worker running it.
    """
    from dask._task_spec import Alias

    targets: dict[Any, Any] = {}
    for key, node in nodes.items():
        if type(node) is not Alias:
            continue
        target, seen = node.target, {key}
        while type(nodes.get(target)) is Alias and target not in seen:
            seen.add(target)
            target = nodes[target].target
        targets[key] = target
    return targets


class _Placement:
    """Each task's ``(retries, workers, options)`` for the wire, from the annotations of its
    key and the call's defaults. Tasks with the same options share one dict, as a submit call's
    tasks do: most graphs have none, or the same for every task."""

    def __init__(
        self, annotations: Mapping[str, Mapping[Any, Any]], defaults: Mapping[str, Any]
    ) -> None:
        self._annotations = {
            name: annotations[name] for name in ANNOTATIONS if annotations.get(name)
        }
        self._defaults = defaults
        self._shared: dict[tuple[Any, ...], dict[str, Any]] = {}
        # a callable is asked per key, as Dask asks it: never with None for the whole graph
        per_task = self._annotations or any(callable(value) for value in defaults.values())
        self._common = None if per_task else self._resolve(None)

    def of(self, key: Any) -> tuple[int, list[str] | None, dict[str, Any] | None]:
        return self._common if self._common is not None else self._resolve(key)

    def _resolve(self, key: Any) -> tuple[int, list[str] | None, dict[str, Any] | None]:
        chosen: dict[str, Any] = {}
        for name in ANNOTATIONS:
            per_key = self._annotations.get(name)
            value = self._defaults.get(name)
            if per_key is not None and key in per_key:
                value = per_key[key]
            if callable(value):
                value = value(key)
            if value is None or value is False or (name == "priority" and value == 0):
                continue
            chosen[name] = value
        retries = chosen.pop("retries", 0)
        workers = chosen.pop("workers", None)
        if workers is not None:
            workers = [workers] if isinstance(workers, str) else [str(w) for w in workers]
        if chosen.pop("allow_other_workers", False):
            chosen["loose"] = True
        if not chosen:
            return retries, workers, None
        identity = tuple(sorted((name, repr(value)) for name, value in chosen.items()))
        return retries, workers, self._shared.setdefault(identity, chosen)
