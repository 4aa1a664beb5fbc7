"""``Scheduler.add_extension``: extra client requests, and word of clients and workers leaving."""

from __future__ import annotations

from typing import Any

import pytest

from storied import Client, LocalCluster
from tests.engine.helpers import poll


class Echo:
    def __init__(self) -> None:
        self.left: list[tuple[str, str]] = []

    def client_handlers(self) -> dict[str, Any]:
        return {"echo": lambda client, text: f"{client} says {text}"}

    def remove_client(self, client: str) -> None:
        self.left.append(("client", client))

    def remove_worker(self, address: str) -> None:
        self.left.append(("worker", address))


class Impostor(Echo):
    """Would take over a request the scheduler serves itself."""

    def client_handlers(self) -> dict[str, Any]:
        return {"story": lambda client, keys: []}


def test_an_extension_serves_requests_and_hears_who_leaves() -> None:
    with LocalCluster(n_workers=1, processes=False) as cluster:
        scheduler = cluster.scheduler
        echo = Echo()
        scheduler._call_on_loop(scheduler.add_extension, "echo", echo)
        with pytest.raises(ValueError, match=r"would replace the requests \['echo'\]"):
            scheduler._call_on_loop(scheduler.add_extension, "again", Echo())
        with pytest.raises(ValueError, match="would replace the requests"):
            scheduler._call_on_loop(scheduler.add_extension, "impostor", Impostor())
        with Client(cluster) as client:
            assert client._sync(client._request, "echo", text="hi") == f"{client.id} says hi"
            (address,) = client.scheduler_info()["workers"]
        poll(lambda: ("client", client.id) in echo.left)
    assert ("worker", address) in echo.left
