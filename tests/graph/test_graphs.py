"""``Client.get``: dask graphs (dicts, HighLevelGraphs, task-spec objects) on the cluster."""

from __future__ import annotations

import operator
import os
from typing import Any

import pytest
from dask._task_spec import Alias, DataNode, Task, TaskRef
from dask.highlevelgraph import HighLevelGraph

from storied import Client


def inc(x: int) -> int:
    return x + 1


def pid(*_: Any) -> int:
    return os.getpid()


LEGACY = {
    "x": 1,
    "y": (inc, "x"),
    ("z", 0): (operator.add, "y", 10),
    ("z", 1): (sum, ["x", "y", ("z", 0)]),
    "nested": (operator.add, (inc, "x"), (inc, (inc, "y"))),
    "unused": (operator.truediv, 1, 0),
}


@pytest.mark.parametrize("keys", ["y", ["y", ("z", 1)], [["x"], [("z", 0), ["nested"]]], ("z", 1)])
def test_get_answers_as_dask_distributed_does(client: Client, dask_client: Any, keys: Any) -> None:
    assert client.get(LEGACY, keys) == dask_client.get(LEGACY, keys)


def test_get_culls_what_the_keys_do_not_need(client: Client) -> None:
    """``unused`` divides by zero: it must never run."""
    assert client.get(LEGACY, "nested") == 6


def test_get_runs_task_spec_graphs(client: Client, dask_client: Any) -> None:
    graph = {
        "a": DataNode("a", 5),
        "b": Task("b", inc, TaskRef("a")),
        "c": Alias("c", "b"),
        ("d", 0): Task(("d", 0), operator.mul, TaskRef("c"), TaskRef("a")),
    }
    assert client.get(graph, [("d", 0), "c"]) == dask_client.get(graph, [("d", 0), "c"])


def test_an_alias_nobody_asked_for_runs_no_task(client: Client, dask_client: Any) -> None:
    """Its dependents read its target's result: the same answer as Dask's, one task fewer."""
    graph = {
        "a2": DataNode("a2", 5),
        "b2": Task("b2", inc, TaskRef("a2")),
        "c2": Alias("c2", "b2"),
        "d2": Task("d2", operator.mul, TaskRef("c2"), TaskRef("b2")),
    }
    assert client.get(graph, "d2") == dask_client.get(graph, "d2") == 36
    keys = {entry.key for entry in client.story("b2", "c2", "d2")}
    assert {"b2", "d2"} <= keys
    assert "c2" not in keys


def test_get_runs_a_high_level_graph(client: Client) -> None:
    graph = HighLevelGraph.from_collections("layer", {"p": (inc, 41)}, dependencies=())
    assert client.get(graph, "p") == 42


def test_get_runs_on_the_workers(client: Client) -> None:
    worker_pids = set(client.run(os.getpid).values())
    graph = {("pid", i): (pid, i) for i in range(8)}
    pids = set(client.get(graph, list(graph)))
    assert pids <= worker_pids
    assert os.getpid() not in pids


def test_get_takes_futures_in_the_graph(client: Client) -> None:
    future = client.submit(inc, 1)
    assert client.get({"x": future, "y": (inc, "x")}, "y") == 3
    assert client.get({"y2": (operator.add, future, 10)}, "y2") == 12


def test_get_sync_false_returns_futures_in_the_shape_of_keys(client: Client) -> None:
    futures = client.get({"a": (inc, 1), "b": (inc, "a")}, [["a"], "b"], sync=False)
    assert [[futures[0][0].result()], futures[1].result()] == [[2], 3]


def test_a_failing_graph_task_raises_its_own_exception(client: Client) -> None:
    with pytest.raises(ZeroDivisionError):
        client.get({"a": (operator.truediv, 1, 0), "b": (inc, "a")}, "b")


def test_bad_graphs_are_refused_at_the_caller(client: Client) -> None:
    with pytest.raises(TypeError, match="expected a dask graph"):
        client.get([("x", 1)], "x")
    with pytest.raises(KeyError, match="neither in the graph nor held by futures"):
        client.get({"a": 1}, "b")
    assert client.submit(inc, 1).result() == 2  # and the client works on


def test_the_story_of_a_graph_task_is_told_by_its_dask_key(client: Client) -> None:
    client.get({("s", 0): (inc, 1)}, ("s", 0))
    story = client.story(str(("s", 0)))
    assert [entry["finish"] for entry in story if entry["where"] == "scheduler"][:3] == [
        "waiting",
        "processing",
        "memory",
    ]


def test_dask_s_other_get_keywords_are_taken(client: Client) -> None:
    graph = {"k": (inc, 1)}
    assert client.get(graph, "k", fifo_timeout="60s", direct=True) == 2
    with pytest.raises(NotImplementedError, match="dask-compatibility"):
        client.get(graph, "k", actors=True)
    with pytest.raises(TypeError, match="allow_other_workers"):
        client.get(graph, "k", allow_other_workers="yes")
