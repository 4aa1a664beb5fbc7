"""client.run(on_error=): a failing worker's exception raised, returned or left out, as Dask
does it; the function still gets ``dask_worker`` and may be async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


def fail_on_one(dask_worker: Any, failing: str) -> str:
    if dask_worker.address == failing:
        raise ValueError(f"failed on {failing}")
    return "ok"


async def fail_async() -> None:
    await asyncio.sleep(0)
    raise KeyError("async failure")


def outcomes(client: Any) -> list[object]:
    """The same calls on storied and Dask, answers reduced to what both must agree on."""
    first, second = sorted(client.scheduler_info()["workers"])
    returned = client.run(fail_on_one, failing=first, on_error="return")
    ignored = client.run(fail_on_one, failing=first, on_error="ignore")
    async_returned = client.run(fail_async, on_error="return")
    with pytest.raises(ValueError, match="failed on"):
        client.run(fail_on_one, failing=first)
    with pytest.raises(ValueError, match="on_error"):
        client.run(fail_on_one, failing=first, on_error="log")
    return [
        (type(returned[first]).__name__, str(returned[first]) == f"failed on {first}"),
        returned[second],
        ignored == {second: "ok"},
        sorted(type(e).__name__ for e in async_returned.values()),
    ]


def test_run_on_error_answers_as_dask_does(client: Any, dask_client: Any) -> None:
    ours = outcomes(client)
    assert ours == outcomes(dask_client)
    assert ours[:3] == [("ValueError", True), "ok", True]


def test_run_refuses_what_it_does_not_do_instead_of_passing_it_on(client: Any) -> None:
    with pytest.raises(NotImplementedError, match="nanny=True"):
        client.run(fail_async, nanny=True)
    with pytest.raises(NotImplementedError, match="dask-compatibility"):
        client.run(fail_async, wait=False)
