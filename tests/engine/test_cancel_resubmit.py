"""A cancel followed at once by a resubmission of the same key (same call, or the same graph
computed again) never cancels the resubmission: the scheduler's answer to the cancel, and any
news of the cancelled submission, arrive after the new future exists and must not touch it."""

from __future__ import annotations

import time

import pytest

from storied import Client
from storied.client.cancel_fence import CancelFence

from .helpers import inc

ROUNDS = 60
DEADLINE = 60.0


def test_cancel_then_resubmit_of_the_same_call_keeps_the_new_future(client: Client) -> None:
    """Failed in its first round before the fence: the echo of the cancel cancelled the new one.
    Some rounds let the first finish before the cancel, so its ``key-in-memory`` can be in
    flight too."""
    deadline = time.monotonic() + DEADLINE
    for round_ in range(ROUNDS):
        first = client.submit(inc, 20_000 + round_)
        if round_ % 3 == 0:
            first.result(timeout=10)
        client.cancel(first)
        again = client.submit(inc, 20_000 + round_)
        assert again.key == first.key
        assert again.result(timeout=max(deadline - time.monotonic(), 1)) == 20_001 + round_
        assert first.cancelled() and again.status == "finished"


def test_cancel_then_compute_of_the_same_graph_keeps_the_new_futures(client: Client) -> None:
    dask = pytest.importorskip("dask")
    deadline = time.monotonic() + DEADLINE
    for round_ in range(ROUNDS // 3):
        total = dask.delayed(sum)([dask.delayed(inc)(30_000 + round_ + i) for i in range(5)])
        first = client.compute(total)
        client.cancel(first)
        again = client.compute(total)
        assert again.key == first.key
        expected = sum(30_001 + round_ + i for i in range(5))
        assert again.result(timeout=max(deadline - time.monotonic(), 1)) == expected


def test_the_fence_holds_each_key_until_every_cancel_of_it_is_answered() -> None:
    fence = CancelFence()
    first = fence.raise_for(["a", "b"])
    second = fence.raise_for(["a"])
    assert first != second, "two cancels in one clock tick are answered apart"
    assert fence.pending == {"a": 2, "b": 1}
    fence.lift(first)
    assert fence.pending == {"a": 1}
    fence.lift("client-cancels-sent-before-a-reconnect")
    assert fence.pending == {"a": 1}
    fence.lift(second)
    assert fence.pending == {}
    fence.raise_for(["c"])
    fence.clear()
    assert fence.pending == {}
