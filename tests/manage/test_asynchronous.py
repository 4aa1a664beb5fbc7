"""The management calls from an asynchronous client, as Dask's: awaited."""

from __future__ import annotations

import asyncio

from storied import Client


def inc(x: int) -> int:
    return x + 1


def test_management_calls_are_awaitable_on_an_asynchronous_client():
    async def main() -> None:
        async with Client(asynchronous=True, n_workers=2, processes=False) as client:
            future = client.submit(inc, 1)
            assert await future == 2
            who_has = await client.who_has([future])
            (holder,) = who_has[future.key]
            assert future.key in (await client.has_what())[holder]
            assert len(await client.nthreads()) == 2
            retired = await client.retire_workers([holder])
            assert list(retired) == [holder]
            assert await future == 2
            await client.restart(timeout=20)
            assert future.status == "cancelled"
            assert len(await client.nthreads()) == 2
            await client.shutdown()
            assert client.status == "closed"
            assert client.cluster.status == "closed"

    asyncio.run(asyncio.wait_for(main(), 60))
