"""Cancelling a future cancels the futures that depend on it, transitively, as Dask does; with
``force`` for every client that wants them, without it only what no other client wants. Each
scenario runs on storied and on dask.distributed in the same test."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from storied import Client
from storied.exceptions import CancelledError

from .helpers import inc, poll


def slow_inc(x: int, delay: float = 1.0) -> int:
    time.sleep(delay)
    return x + 1


def statuses(*futures: Any) -> list[str]:
    return [future.status for future in futures]


def all_cancelled(*futures: Any) -> bool:
    return statuses(*futures) == ["cancelled"] * len(futures)


def chain_cancelled_while_running(client: Any, tasks: dict[str, Any]) -> list[Any]:
    """``x`` runs, ``y`` and ``z`` wait for it; ``cancel(x)`` cancels all three (``tasks``:
    the scheduler's tasks by key, to see ``x`` run)."""
    x = client.submit(slow_inc, uuid.uuid4().int)
    y = client.submit(inc, x)
    z = client.submit(inc, y)
    poll(lambda: x.key in tasks and tasks[x.key].state == "processing", what="x runs")
    client.cancel(x)
    poll(lambda: all_cancelled(x, y, z), timeout=10, what="the chain is cancelled")
    return [x, y, z]


def test_a_chain_of_dependents_is_cancelled_with_its_running_root(
    cluster, client, dask_cluster, dask_client
):
    x, y, z = chain_cancelled_while_running(client, cluster.scheduler.state.tasks)
    for future in (y, z):
        assert future.cancelled()
        with pytest.raises(CancelledError):
            future.result(timeout=5)
    poll(
        lambda: not {x.key, y.key, z.key} & set(cluster.scheduler.state.tasks),
        what="the scheduler forgot the chain",
    )
    from distributed.client import FutureCancelledError

    *_, dask_z = chain_cancelled_while_running(dask_client, dask_cluster.scheduler.tasks)
    with pytest.raises(FutureCancelledError):
        dask_z.result(timeout=5)


def test_the_cancel_is_in_the_story_and_event_of_each_dependent(client):
    x = client.submit(inc, 1, workers=["no-such-worker"], pure=False)
    y = client.submit(inc, x)
    client.cancel(x)
    poll(lambda: all_cancelled(x, y), what="y is cancelled")

    def cancel_events() -> list[dict[str, Any]]:
        return [e for _, e in client.get_events(client.id) if e.get("action") == "cancel"]

    (event,) = poll(lambda: [e for e in cancel_events() if e["keys"] == [x.key]])
    assert event["dependents"] == [y.key] and event["force"] is False
    story = client.story(y.key)
    assert any(entry[5] == event["stimulus_id"] for entry in story), story


def finished_then_cancelled(client: Any) -> list[Any]:
    """``x`` and ``y = inc(x)`` are done; ``cancel(x)`` cancels ``y`` too, as in Dask."""
    x = client.submit(inc, uuid.uuid4().int)
    y = client.submit(inc, x)
    assert y.result(timeout=10) == x.result(timeout=10) + 1
    client.cancel(x)
    poll(lambda: all_cancelled(x, y), timeout=10, what="y is cancelled")
    return [x, y]


def test_a_finished_dependent_of_a_finished_future_is_cancelled_too(client, dask_client):
    assert statuses(*finished_then_cancelled(client)) == ["cancelled", "cancelled"]
    assert statuses(*finished_then_cancelled(dask_client)) == ["cancelled", "cancelled"]


def shared_with_another_client(
    first: Any, second: Any, tasks: dict[str, Any], force: bool
) -> list[Any]:
    """``first`` and ``second`` both hold ``x`` and ``y = inc(x)``; ``first`` cancels ``x``
    once the scheduler (``tasks``: its tasks by key) knows that both want ``y``."""
    n = uuid.uuid4().int
    x, x2 = (c.submit(slow_inc, n, 0.3, key=f"x-{n}") for c in (first, second))
    y, y2 = first.submit(inc, x, key=f"y-{n}"), second.submit(inc, x2, key=f"y-{n}")
    poll(lambda: y.key in tasks and len(tasks[y.key].who_wants) == 2, what="both want y")
    first.cancel(x, force=force)
    poll(lambda: x.cancelled(), what="x is cancelled at once")
    if force:
        poll(lambda: all_cancelled(y, x2, y2), timeout=10, what="every client's are cancelled")
    else:
        assert y2.result(timeout=10) == n + 2
    return [x, y, x2, y2]


@pytest.mark.parametrize("force", [False, True])
def test_force_decides_for_keys_another_client_wants(
    cluster, client, dask_cluster, dask_client, force
):
    import distributed

    with Client(cluster) as other:
        ours = statuses(
            *shared_with_another_client(client, other, cluster.scheduler.state.tasks, force)
        )
    with distributed.Client(dask_client.scheduler.address, set_as_default=False) as other:
        theirs = statuses(
            *shared_with_another_client(dask_client, other, dask_cluster.scheduler.tasks, force)
        )
    assert ours == theirs
    expected = ["cancelled"] * 4 if force else ["cancelled", "finished", "finished", "finished"]
    assert ours == expected


def test_a_dependent_submitted_again_after_the_cancel_survives(client):
    """The answer to ``cancel(x)`` names ``y``; a ``y`` made after the cancel keeps going
    (whether or not the release of the first ``y`` went out before it)."""
    for round_ in range(40):
        x = client.submit(inc, 40_000 + round_)
        y = client.submit(inc, x)
        client.cancel([x, y] if round_ % 2 else x)
        del y
        x_again = client.submit(inc, 40_000 + round_)
        y_again = client.submit(inc, x_again)
        assert y_again.result(timeout=10) == 40_002 + round_
        assert y_again.status == "finished"


def test_the_fence_tells_which_futures_a_cancel_answer_concerns() -> None:
    """A cancel's answer cancels the dependents' futures made before the cancel was sent."""
    from storied.client.cancel_fence import CancelFence
    from storied.client.future import FutureState

    fence = CancelFence()
    before = FutureState()
    stimulus_id = fence.raise_for(["x"])
    after = FutureState()
    cancel_born = fence.lift(stimulus_id)
    assert cancel_born is not None and before.born < cancel_born < after.born
    assert fence.lift("another-clients-forced-cancel") is None


def test_a_graph_on_a_cancelled_future_is_cancelled_through_its_intermediates(cluster, client):
    """``z = inc(inc(x))`` computed from a future ``x``: the middle task is nobody's future.
    (dask.distributed 2026.8 fails an assertion in its scheduler's cancel here.)"""
    dask = pytest.importorskip("dask")
    tasks = cluster.scheduler.state.tasks
    known_before = set(tasks)
    x = client.submit(inc, 1, workers=["no-such-worker"], pure=False)
    z = client.compute(dask.delayed(inc)(dask.delayed(inc)(x)))
    poll(lambda: len(set(tasks) - known_before) == 3, what="x, the middle task and z are there")
    client.cancel(x)
    poll(lambda: all_cancelled(x, z), what="z is cancelled")
    poll(lambda: not set(tasks) - known_before, what="the whole graph is forgotten")
