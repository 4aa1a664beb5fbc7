"""``Client.replicate`` and ``Client.rebalance``: more copies of results, or evener ones.

Checks the arguments here, at the caller, waits for the futures, then asks the scheduler
(``storied.scheduler.replicas``), which answers once the workers have reported their copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied.client.future import Future, wait_states

if TYPE_CHECKING:
    from storied.client.client import Client


def check_workers(workers: Any) -> list[str] | None:
    """None, or worker addresses as a list (a single address may be given as a str)."""
    if workers is None:
        return None
    if isinstance(workers, str):
        return [workers]
    if not isinstance(workers, list | tuple | set | frozenset) or not all(
        isinstance(w, str) for w in workers
    ):
        raise TypeError(f"workers must be None or a list of worker addresses, not {workers!r}")
    return list(workers)


def check_copies(n: Any) -> int | None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be None (every worker) or a whole number >= 1, not {n!r}")
    return n


async def replicate(
    client: Client, futures: list[Future], n: int | None, workers: list[str] | None
) -> None:
    await wait_states([f._state for f in futures])
    await client._request("replicate", keys=[f.key for f in futures], n=n, workers=workers)


async def rebalance(
    client: Client, futures: list[Future] | None, workers: list[str] | None
) -> None:
    keys = None
    if futures is not None:
        await wait_states([f._state for f in futures])
        keys = [f.key for f in futures]
    await client._request("rebalance", keys=keys, workers=workers)
