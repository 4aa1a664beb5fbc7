"""Futures found in what a user holds, and ``fire_and_forget`` for them, as in Dask."""

from __future__ import annotations

from typing import Any

from storied.client.future import Future


def futures_of(collection: Any) -> list[Future]:
    """The futures in ``collection``, each once, in the order met: a future, lists, tuples,
    sets and dicts of them, nested, and dask collections holding futures in their graphs.

    A dask collection is anything with ``__dask_graph__()`` (dask itself is not imported);
    as Dask, it looks at the graph's values, not inside its tasks' arguments.
    """
    stack = [collection]
    seen: set[int] = set()
    found: list[Future] = []
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in (list, tuple, set, frozenset):
            stack.extend(reversed(list(item)))
        elif kind is dict:
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, Future):
            if id(item) not in seen:
                seen.add(id(item))
                found.append(item)
        elif callable(getattr(item, "__dask_graph__", None)) and not isinstance(item, type):
            graph = item.__dask_graph__()
            if graph is not None:
                stack.extend(reversed([_unwrapped(node) for node in graph.values()]))
    return found


def _unwrapped(node: Any) -> Any:
    """A graph node as dask keeps a future of ours: a data node (``.value``) around it."""
    value = getattr(node, "value", None)
    return value if isinstance(value, Future) else node


def fire_and_forget(obj: Any) -> None:
    """Have the scheduler run these futures' tasks to the end even if every future of them is
    dropped (for tasks run for their side effects). Their results are not kept.

    On the record: the scheduler logs an event under the topic ``fire-and-forget``.
    """
    by_client: dict[Any, list[str]] = {}
    for future in futures_of(obj):
        by_client.setdefault(future.client, []).append(future.key)
    if not by_client and not _holds_futures(obj):
        raise TypeError(
            f"fire_and_forget() takes futures or collections of them, not {type(obj).__name__}"
        )
    for client, keys in by_client.items():
        client._send({"op": "fire-and-forget", "keys": keys})


def _holds_futures(obj: Any) -> bool:
    """Whether ``obj`` is a kind of thing futures can be in (an empty one is fine)."""
    return type(obj) in (list, tuple, set, frozenset, dict) or hasattr(obj, "__dask_graph__")
