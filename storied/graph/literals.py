"""Literal data in a dask graph, turned into dask ``DataNode``\\ s before dask's optimizers run.

Dask's ``convert_legacy_graph`` (which a collection's optimizer calls first: a bag's does)
inspects every element of every list in a graph, one Python call each, to find tasks and keys
in it: a bag made with ``from_sequence`` over 100,000 numbers spends most of its client time
there. A list, set or frozenset whose elements are all plain scalars (numbers, strings, bytes,
None) holds no task, and holds no key exactly when none of its elements is one of the graph's
keys: both are checked at C speed here, and such a value becomes the ``DataNode`` dask would
make of it, which dask's conversion then passes through untouched. Everything else stays for
dask to convert, so the result is the same graph dask would build.

Only graphs whose layers are all materialized are touched (those are the ones with literal
data; listing a blockwise layer's keys would materialize it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: element types that are never tasks (a key among them is found by ``isdisjoint``)
PLAIN = frozenset({int, float, complex, bool, str, bytes, type(None)})
#: containers dask turns into a copy of themselves when they hold neither tasks nor keys
CONTAINERS = (list, set, frozenset)


def is_plain_literal(value: Any, keys: set[Any]) -> bool:
    """Whether dask's conversion would return ``value`` as it is (a copy): a list, set or
    frozenset of plain scalars, none of them a key of the graph."""
    return type(value) in CONTAINERS and set(map(type, value)) <= PLAIN and keys.isdisjoint(value)


def convert_graph(dsk: Mapping[Any, Any]) -> dict[Any, Any]:
    """``dask._task_spec.convert_legacy_graph(dsk)``, its plain literal values done here; a
    graph dask's optimizers have converted already (every value a node) only loses the aliases
    of keys to themselves, as dask's conversion would drop them."""
    from dask._task_spec import Alias, DataNode, GraphNode, convert_legacy_graph

    if all(isinstance(value, GraphNode) for value in dsk.values()):
        return {
            key: node
            for key, node in dsk.items()
            if not (isinstance(node, Alias) and node.target == key)
        }
    keys = set(dsk)
    return convert_legacy_graph(
        {
            key: DataNode(key, type(value)(value)) if is_plain_literal(value, keys) else value
            for key, value in dsk.items()
        },
        keys,
    )


def convert_literals(hlg: Any) -> Any:
    """``hlg`` (a HighLevelGraph) with its plain literal values as ``DataNode``\\ s; ``hlg``
    itself when it has none or has a layer that is not materialized."""
    from dask._task_spec import DataNode
    from dask.highlevelgraph import MaterializedLayer

    layers = hlg.layers
    if not all(type(layer) is MaterializedLayer for layer in layers.values()):
        return hlg
    keys: set[Any] = set()
    for layer in layers.values():
        keys.update(layer.mapping)
    converted: dict[str, Any] = {}
    for name, layer in layers.items():
        mapping: Mapping[Any, Any] = layer.mapping
        literal = [key for key, value in mapping.items() if is_plain_literal(value, keys)]
        if literal:
            nodes = dict(mapping)
            for key in literal:
                nodes[key] = DataNode(key, type(nodes[key])(nodes[key]))
            converted[name] = MaterializedLayer(
                nodes,
                annotations=layer.annotations,
                collection_annotations=layer.collection_annotations,
            )
    if not converted:
        return hlg
    return type(hlg)({**layers, **converted}, hlg.dependencies, hlg.key_dependencies)


def optimize_with_literals(expr: Any) -> None:
    """Fill in the optimized graph of ``expr`` (a ``HLGExpr`` or a sequence of them, what
    ``dask.compute`` hands a scheduler for bags and other legacy collections) as dask would,
    each collection's optimizer given its graph with literals converted (``convert_literals``).
    Anything else, or a graph without such literals, is left for dask to optimize."""
    from dask._expr import HLGExpr, _HLGExprSequence
    from dask.highlevelgraph import HighLevelGraph

    parts = expr.operands if isinstance(expr, _HLGExprSequence) else [expr]
    if not all(isinstance(part, HLGExpr) for part in parts) or "_optimized_dsk" in vars(expr):
        return
    graphs = [(part, convert_literals(part.hlg)) for part in parts]
    if all(converted is part.hlg for part, converted in graphs):
        return
    optimized = [
        part.low_level_optimizer(hlg, part.__dask_keys__()) if part.low_level_optimizer else hlg
        for part, hlg in graphs
    ]
    # the cache of dask's own functools.cached_property, which __dask_graph__ and
    # __dask_annotations__ read
    vars(expr)["_optimized_dsk"] = HighLevelGraph.merge(*optimized)
