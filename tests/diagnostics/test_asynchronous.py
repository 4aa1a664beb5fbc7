"""The diagnostics on an asynchronous client: ``async with`` forms, and a terminal bar that
says why it cannot block. (Not beside the browser tests: Playwright's sync API keeps an event
loop running in the main thread while its browser is open.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from storied import Client, LocalCluster, get_task_stream, performance_report, progress
from tests.diagnostics.test_report import report_data
from tests.engine.helpers import inc


def test_a_terminal_bar_on_an_asynchronous_client_says_what_to_do(cluster: LocalCluster) -> None:
    async def main() -> None:
        async with Client(
            cluster.scheduler_address, asynchronous=True, security=cluster.security
        ) as client:
            future = client.submit(inc, 900)
            with pytest.raises(TypeError, match="await the futures instead"):
                progress(future, notebook=False)
            assert await future == 901

    asyncio.run(main())


def test_an_asynchronous_client_writes_a_report_and_a_task_stream(
    cluster: Any, tmp_path: Path
) -> None:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with Client(
            cluster.scheduler_address, asynchronous=True, security=cluster.security
        ) as client:
            async with (
                performance_report(tmp_path / "async.html", client=client),
                get_task_stream(client) as ts,
            ):
                assert await client.gather(client.map(inc, range(800, 804))) == [801, 802, 803, 804]
            return ts.data, await client.get_task_stream(count=4)

    inside, newest = asyncio.run(main())
    assert len(inside) == 4 and {e["key"] for e in inside} == {e["key"] for e in newest}
    data = report_data(tmp_path / "async.html")
    assert len(data["executions"]) == 4
    assert 'performance_report(tmp_path / "async.html", client=client)' in data["code"]
