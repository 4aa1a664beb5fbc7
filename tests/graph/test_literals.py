"""Literal data converted before dask's optimizers: the same graph as dask's own conversion,
without walking the data element by element. Pure: no cluster."""

from __future__ import annotations

import operator
from typing import Any

import dask
import dask._task_spec as task_spec
import dask.array as da
import dask.bag as db
import pytest
from dask.base import collections_to_expr
from dask.highlevelgraph import HighLevelGraph

from storied.graph.convert import materialize
from storied.graph.literals import convert_graph, convert_literals, is_plain_literal


def inc(x: int) -> int:
    return x + 1


def is_even(x: int) -> bool:
    return x % 2 == 0


KEYS = {"x", ("y", 0), 7}


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ([1, 2.5, "a", b"b", None, True, 3j], True),
        ({1, 2}, True),
        (frozenset({"a"}), True),
        ([], True),
        (["a", "x"], False),  # "x" is a key: dask makes it an alias
        ([1, 7], False),  # so is 7
        ([1, ("y", 0)], False),  # a tuple may be a task or a key
        ([1, [2]], False),  # nested: left to dask
        ((1, 2), False),  # a tuple may be a task
        ("text", False),
        ({"a": 1}, False),
    ],
)
def test_plain_literals_are_containers_of_scalars_that_are_not_keys(value: Any, plain: bool):
    assert is_plain_literal(value, KEYS) is plain


LEGACY = {
    "x": 1,
    "data": list(range(100)),
    "words": {"a", "b"},
    "refers": [1, "x", 2],
    7: [1, 2],
    "sevens": [7, 8],
    "y": (sum, "data"),
    ("z", 0): (operator.add, "y", 7),
    "nested": (sum, [1, 2, (inc, "x")]),
}


def test_a_legacy_dict_converts_as_dask_converts_it():
    assert convert_graph(LEGACY) == task_spec.convert_legacy_graph(LEGACY)


def test_a_converted_graph_comes_back_as_dask_would_convert_it_again(monkeypatch):
    """Nodes (what dask's optimizers hand over) are not walked again; an alias of a key to
    itself goes, as in dask's conversion."""
    nodes = task_spec.convert_legacy_graph(LEGACY)
    nodes["self"] = task_spec.Alias("self", target="self")
    nodes["to-x"] = task_spec.Alias("to-x", target="x")
    expected = task_spec.convert_legacy_graph(nodes)

    def walked(*args: Any) -> None:
        raise AssertionError("a graph of nodes was converted again")

    monkeypatch.setattr(task_spec, "convert_legacy_graph", walked)
    converted = convert_graph(nodes)
    assert converted == expected
    assert "self" not in converted and converted["to-x"] is nodes["to-x"]


def bag_total() -> Any:
    return db.from_sequence(range(10_000), npartitions=10).map(inc).filter(is_even).sum()


def test_a_bag_optimizes_to_dasks_graph_without_walking_its_data(monkeypatch):
    """``from_sequence`` keeps its partitions as literal lists: dask converts each element
    with a Python call (10,000 here), storied none of them."""
    collections = [bag_total(), db.from_sequence(["a", None, 2.5], npartitions=2).map(str)]
    expected = task_spec.convert_legacy_graph(
        collections_to_expr(collections, True).optimize().__dask_graph__()
    )
    calls = 0
    convert_task = task_spec.convert_legacy_task

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return convert_task(*args)

    monkeypatch.setattr(task_spec, "convert_legacy_task", counting)
    nodes, annotations, cull = materialize(collections_to_expr(collections, True).optimize())
    assert nodes == expected
    assert (annotations, cull) == ({}, False)
    assert 0 < calls < 1_000


def test_a_bag_with_annotations_keeps_what_dask_keeps():
    """dask's bag optimizer drops layer annotations; storied's conversion keeps the same."""
    with dask.annotate(retries=2):
        total = bag_total()
    _, annotations, _ = materialize(collections_to_expr([total], True).optimize())
    assert annotations == collections_to_expr([total], True).optimize().__dask_annotations__()


def test_a_graph_with_unmaterialized_layers_is_left_alone():
    """Listing a blockwise layer's keys would materialize it: such graphs stay dask's."""
    x = da.ones((4, 4), chunks=2)
    graph = (x + 1).__dask_graph__()
    assert isinstance(graph, HighLevelGraph)
    assert convert_literals(graph) is graph
