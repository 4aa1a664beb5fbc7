"""``Client.get``, ``compute`` and ``persist``: dask collections computed on the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from storied.compat import PAGE
from storied.graph.convert import import_dask, to_tasks
from storied.graph.packages import collection_packages

if TYPE_CHECKING:
    from storied.client.client import Client
    from storied.client.future import Future


def submit_graph(
    client: Client,
    graph: Any,
    keys: list[Any],
    annotations: dict[str, Any],
    cull_graph: bool = False,
) -> dict[Any, Future]:
    """Send ``graph``'s tasks; a Future for each of ``keys`` (dask keys)."""
    from storied.client.client import _GraphPart
    from storied.client.future import Future
    from storied.client.reconnect import USABLE

    dask = import_dask()
    if client.status not in USABLE:
        raise RuntimeError(f"the client is {client.status}; cannot compute")
    packages = collection_packages(graph)
    if packages:  # the workers import them while the graph is converted here
        client._send({"op": "preload-modules", "modules": packages})
    defaults = {**dask.get_annotations(), **{k: v for k, v in annotations.items() if v}}
    converted = to_tasks(graph, keys, defaults, cull_graph=cull_graph)
    unknown = [key for key in converted.absent if converted.keys[key] not in client._states]
    if unknown:
        raise KeyError(f"keys {unknown[:5]} are neither in the graph nor held by futures")
    storied_keys = list(converted.keys.values())
    states = client._acquire(storied_keys)
    futures = {
        key: Future(storied_key, client, state)
        for (key, storied_key), state in zip(converted.keys.items(), states, strict=True)
    }
    client._send(
        _GraphPart(converted.tasks, converted.function_id, converted.function, storied_keys)
    )
    return futures


#: Client.get/compute/persist keywords that place tasks, as dask.annotate names them
PLACEMENT = ("workers", "allow_other_workers", "resources", "retries", "priority")
#: keywords Dask's get/compute/persist take that mean nothing for storied's graphs
IGNORED = ("fifo_timeout", "direct", "asynchronous")


def _annotations(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the placement keywords out of ``kwargs`` (and those storied ignores); what is left
    goes to dask's optimizations."""
    annotations = {name: kwargs.pop(name, None) for name in PLACEMENT}
    if annotations["allow_other_workers"] not in (True, False, None):
        raise TypeError("allow_other_workers= must be True, False, or None")
    if kwargs.pop("actors", None):
        raise NotImplementedError(
            "actors= is not supported for dask graphs and collections on storied; make an actor "
            f"with client.submit(cls, actor=True) (see {PAGE})"
        )
    for name in IGNORED:
        kwargs.pop(name, None)
    return annotations


def _cull_here(dask: Any, collections: list[Any], optimize_graph: bool) -> bool:
    """Whether to skip dask's optimization and cull the graph ourselves: for delayed objects
    optimizing only culls, and dask culls one layer at a time, which takes quadratic time
    (seconds for 10,000 delayed calls); ours is linear. Fusing, when switched on, stays dask's."""
    from dask.delayed import Delayed

    return (
        optimize_graph
        and not dask.config.get("optimization.fuse.delayed", False)
        and all(type(c) is Delayed for c in collections)
    )


def _is_collection(dask: Any, obj: Any) -> bool:
    """``dask.is_dask_collection``, without its cost for delayed objects (a delayed object
    answers every attribute lookup by building a new delayed object)."""
    from dask.delayed import Delayed

    return type(obj) is Delayed or dask.is_dask_collection(obj)


def _flatten(keys: Any) -> Iterator[Any]:
    if isinstance(keys, list):
        for item in keys:
            yield from _flatten(item)
    else:
        yield keys


def _pack(keys: Any, futures: dict[Any, Future]) -> Any:
    """``keys``' nesting of lists, with each key replaced by its future."""
    if isinstance(keys, list):
        return [_pack(item, futures) for item in keys]
    return futures[keys]


def get(client: Client, dsk: Any, keys: Any, *, sync: bool = True, **kwargs: Any) -> Any:
    """Compute ``keys`` of graph ``dsk``; results in the nesting of ``keys``."""
    annotations = _annotations(kwargs)
    futures = submit_graph(client, dsk, list(dict.fromkeys(_flatten(keys))), annotations)
    packed = _pack(keys, futures)
    if not sync:
        return packed
    return client.gather(packed)


def compute(
    client: Client,
    collections: Any,
    *,
    sync: bool = False,
    optimize_graph: bool = True,
    traverse: bool = True,
    **kwargs: Any,
) -> Any:
    """Futures for ``collections`` (one, or a list for a list); values if ``sync``."""
    dask = import_dask()
    annotations = _annotations(kwargs)
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr

    singleton = not isinstance(collections, (list, tuple, set, frozenset))
    items = [collections] if singleton else list(collections)
    if traverse:
        items = [
            dask.delayed(item) if isinstance(item, (list, set, tuple, dict, Iterator)) else item
            for item in items
        ]
    is_collection = [_is_collection(dask, item) for item in items]
    variables = [item for item, flag in zip(items, is_collection, strict=True) if flag]
    futures: dict[Any, Future] = {}
    names: list[Any] = []
    if variables:
        cull_here = _cull_here(dask, variables, optimize_graph)
        expr = collections_to_expr(variables, optimize_graph and not cull_here, **kwargs)
        expr = FinalizeCompute(expr).optimize()
        names = list(_flatten(expr.__dask_keys__()))
        futures = submit_graph(client, expr, names, annotations, cull_here)
    position = iter(names)
    results = [
        futures[next(position)] if flag else item
        for item, flag in zip(items, is_collection, strict=True)
    ]
    if sync:
        results = client.gather(results)
    return results[0] if singleton else results


def persist(
    client: Client,
    collections: Any,
    *,
    optimize_graph: bool = True,
    **kwargs: Any,
) -> Any:
    """The same collections, backed by futures computing on the cluster."""
    dask = import_dask()
    annotations = _annotations(kwargs)
    from dask.base import collections_to_expr

    singleton = not isinstance(collections, (list, tuple, set, frozenset))
    items = [collections] if singleton else list(collections)
    for item in items:
        if not _is_collection(dask, item):
            raise TypeError(f"persist() takes dask collections, not {type(item).__name__}")
    cull_here = _cull_here(dask, items, optimize_graph)
    expr = collections_to_expr(items, optimize_graph and not cull_here).optimize()
    keys = expr.__dask_keys__()
    futures = submit_graph(client, expr, list(_flatten(keys)), annotations, cull_here)
    rebuilt = []
    for item, item_keys in zip(items, keys, strict=True):
        rebuild, args = item.__dask_postpersist__()
        rebuilt.append(rebuild({key: futures[key] for key in _flatten(item_keys)}, *args))
    return rebuilt[0] if singleton else rebuilt
