"""In-memory connections between peers on one event loop."""

from __future__ import annotations

import asyncio

import pytest

from storied import Client, LocalCluster, Security
from storied.comm import CommClosedError, Listener, connect
from storied.comm.local import LocalComm
from storied.protocol.handshake import AuthenticationError


def test_a_pair_delivers_copies_in_order_and_what_was_sent_before_closing() -> None:
    async def main() -> None:
        client, server = LocalComm.pair("local://a", "tcp://127.0.0.1:1")
        sent = {"op": "x", "values": (1, 2)}
        client.write(sent)
        client.write([1, 2, 3])
        client.abort("done")
        received = await server.read()
        assert received == {"op": "x", "values": [1, 2]} and received is not sent
        assert await server.read() == [1, 2, 3]
        with pytest.raises(CommClosedError):
            await server.read()
        with pytest.raises(CommClosedError):
            client.write("late")
        with pytest.raises(TimeoutError):
            await LocalComm.pair("local://b", "local://c")[0].read(timeout=0.01)

    asyncio.run(main())


def test_only_a_peer_with_the_same_credentials_skips_the_socket() -> None:
    async def main() -> None:
        served: list[str] = []

        async def handler(comm) -> None:
            served.append(type(comm).__name__)
            await comm.send({"hello": await comm.read()})

        listener = Listener("tcp://127.0.0.1:0", handler, Security(token="secret-token-for-tests"))
        await listener.start()
        try:
            comm = await connect(listener.address, Security(token="secret-token-for-tests"))
            assert isinstance(comm, LocalComm)
            assert await comm.request("there") == {"hello": "there"}
            with pytest.raises(AuthenticationError):
                await connect(listener.address, Security(token="wrong-token-for-tests"), timeout=2)
            assert served == ["LocalComm"]
        finally:
            await listener.close()
        with pytest.raises(OSError):
            await connect(listener.address, Security(token="secret-token-for-tests"), timeout=0.2)

    asyncio.run(main())


def test_an_in_process_cluster_talks_through_memory() -> None:
    def inc(x: int) -> int:
        return x + 1

    with LocalCluster(n_workers=2, processes=False) as cluster, Client(cluster) as client:
        assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
        kinds = {type(comm).__name__ for comm in cluster.scheduler._listener._comms}
        assert kinds == {"LocalComm"}
