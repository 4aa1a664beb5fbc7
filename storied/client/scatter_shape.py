"""Which data ``client.scatter`` sends item by item, and the shape of the futures it gives back,
as Dask decides: a ``range`` is a list, an iterator is refused; a ``list``, ``tuple``, ``set``,
``frozenset``, ``dict`` or namedtuple is unpacked (futures come back in the same type); any
other object, subclasses of those included, is scattered whole as one value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

UNPACKED = (list, tuple, set, frozenset, dict)


def _is_namedtuple(data: Any) -> bool:
    return isinstance(data, tuple) and hasattr(data, "_fields")


def as_scattered(data: Any) -> tuple[Any, bool]:
    """``(data, whole)``: the data as it is scattered, and whether it goes as one value."""
    if isinstance(data, Iterator):
        raise TypeError(
            "scatter takes a list, tuple, set, dict or one object, not an iterator: "
            "pass list(...) of it"
        )
    if isinstance(data, range):
        data = list(data)
    return data, not (type(data) in UNPACKED or _is_namedtuple(data))


def shaped_like(data: Any, futures: list[Any]) -> Any:
    """Items (futures, or the values gathered for them) in the type of the sequence they
    came from, namedtuples included."""
    if _is_namedtuple(data):
        return type(data)(*futures)
    return type(data)(futures)
