"""Dask keys (str, bytes, int, float or tuples of them) as storied's string keys."""

from __future__ import annotations

from typing import Any


def stringify(key: Any) -> str:
    """The storied key for a dask key: strings stay as they are, tuples read as dask prints
    them, e.g. ``"('x', 0, 1)"``; the same dask key always gives the same string."""
    if type(key) is str:
        return key
    if isinstance(key, (tuple, int, float, bytes)):
        return str(key)
    raise TypeError(
        f"a dask key is a str, bytes, int, float or a tuple of them, not {type(key).__name__}"
    )
