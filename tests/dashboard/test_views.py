"""What the pages compute, beyond what the API tests cover: task prefixes as Dask names them."""

from __future__ import annotations

import pytest
from dask.utils import key_split

from storied.dashboard.views import key_prefix
from storied.graph.keys import stringify

KEYS = [
    "inc-1f2e3d4c5b6a79880a1b2c3d4e5f6a7b",
    "finalize-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "hello-world-1",
    "my-task-00000001",
    "random_sample-abcdef12",
    "x-deadbeef",
    "a-b-c-d",
    "data-3f4a-x",
    "x",
    "a--1",
    "hello-world-x1-abc",
    "fit-score-abcdefab-1",
    ("sum-aggregate-0a1b2c3d4e5f60718293a4b5c6d7e8f9", 3),
    ("rechunk-merge-0a1b2c3d4e5f60718293a4b5c6d7e8f9", 0, 1),
    ("x-1", 0),
    ("x", 0),
]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_key_prefix_is_dasks_key_split(key: object) -> None:
    """storied keeps dask keys as strings (``stringify``); the prefix is the same either way."""
    assert key_prefix(stringify(key)) == key_split(key)
