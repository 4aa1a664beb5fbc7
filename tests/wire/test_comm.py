"""Messages with buffers over real TCP (and TLS), on both event loops: whole, in order, and the
frame limit enforced at the sender.

Listeners run on a loop thread of their own (``loop_listener``): a connection from the loop a
listener runs on would take the in-memory path instead of TCP.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from storied.comm import Comm, Listener, Security, connect
from storied.comm.core import FrameTooLarge, TCPComm
from storied.protocol.frames import encode_frames
from storied.protocol.serialize import dumps_data, dumps_with_buffers, pickle_loads
from tests.security.conftest import CertificateAuthority

TOKEN = "wire-test-token-long-enough"


def _loops() -> list[Any]:
    loops: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return loops
    return [*loops, pytest.param(uvloop.new_event_loop, id="uvloop")]


async def _echo(comm: Comm) -> None:
    while True:
        comm.write(await comm.read())


def _run(loop_factory: Callable[[], asyncio.AbstractEventLoop], coroutine: Any) -> Any:
    loop = loop_factory()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def _exchange(address: str, client: Security) -> list[Any]:
    """Send a big array between two small messages through an echo listener; return replies."""
    comm = await connect(address, client)
    assert isinstance(comm, TCPComm)
    array = np.arange(5_000_000, dtype="f8")  # 40 MB
    comm.write({"n": 1})
    comm.write({"data": dumps_data(array), "n": 2})
    comm.write({"n": 3})
    replies = [await comm.read(timeout=30) for _ in range(3)]
    replies[1]["data"] = pickle_loads(replies[1]["data"])
    assert np.array_equal(replies[1]["data"], array)
    await comm.close()
    return replies


@pytest.mark.parametrize("loop_factory", _loops())
def test_a_big_message_arrives_whole_and_in_order_between_small_ones(loop_factory, loop_listener):
    security = Security(token=TOKEN)
    listener = loop_listener(_echo, security)
    replies = _run(loop_factory, _exchange(listener.address, security))
    assert [r["n"] for r in replies] == [1, 2, 3]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("loop_factory", _loops())
def test_a_big_message_crosses_tls(loop_factory, loop_listener, tmp_path):
    ca = CertificateAuthority.create(tmp_path, "ca")
    server, client = ca.security("server", TOKEN), ca.security("client", TOKEN)
    listener = loop_listener(_echo, server)
    assert listener.address.startswith("tls://")
    replies = _run(loop_factory, _exchange(listener.address, client))
    assert [r["n"] for r in replies] == [1, 2, 3]


def test_closing_after_a_large_write_delivers_it_first(loop_listener):
    """The sender closes right after writing a large message: it still arrives whole."""
    arrived: list[Any] = []

    async def receive(comm: Comm) -> None:
        arrived.append(pickle_loads((await comm.read(timeout=30))["data"]))

    listener = loop_listener(receive, Security(token=TOKEN))

    async def write_then_close() -> None:
        comm = await connect(listener.address, Security(token=TOKEN))
        comm.write({"data": dumps_data(b"w" * 30_000_000)})
        await comm.close()

    _run(asyncio.new_event_loop, write_then_close())
    deadline = time.monotonic() + 30
    while not arrived and time.monotonic() < deadline:
        time.sleep(0.01)
    assert arrived == [b"w" * 30_000_000]


def test_the_frame_limit_binds_the_connecting_side_and_not_data(loop_listener):
    listener = loop_listener(_echo, Security(token=TOKEN))

    async def oversized() -> None:
        comm = await connect(listener.address, Security(token=TOKEN), max_frame_size=10_000)
        with pytest.raises(FrameTooLarge, match=r"exceeds comm\.max-frame-size \(10000 bytes\)"):
            comm.write({"keys": ["k" * 100] * 200})
        comm.write({"data": dumps_data(b"d" * 1_000_000)})  # data is not bound by it
        assert len(pickle_loads((await comm.read(timeout=10))["data"])) == 1_000_000
        await comm.close()

    _run(asyncio.new_event_loop, oversized())


def test_in_memory_connections_keep_the_same_limits_and_copy_data():
    """A peer on the listener's own loop skips the socket, not the rules."""

    async def scenario() -> None:
        listener = Listener("tcp://127.0.0.1:0", _echo, Security(token=TOKEN))
        await listener.start()
        try:
            comm = await connect(listener.address, Security(token=TOKEN), max_frame_size=10_000)
            assert not isinstance(comm, TCPComm)
            with pytest.raises(FrameTooLarge, match=r"comm\.max-frame-size \(10000 bytes\)"):
                comm.write({"keys": ["k" * 100] * 200})
            array = np.zeros(1_000_000)
            comm.write({"data": dumps_data(array)})
            echoed = pickle_loads((await comm.read(timeout=10))["data"])
            assert np.array_equal(echoed, array) and not np.shares_memory(echoed, array)
            await comm.close()
        finally:
            await listener.close()

    _run(asyncio.new_event_loop, scenario())


def test_a_read_timeout_bounds_silence_not_a_slow_large_message(loop_listener):
    """A transfer that keeps arriving is waited for; only a silent peer times out."""
    header, buffers = dumps_with_buffers({"data": dumps_data(b"t" * 1_000_000)})
    wire = b"".join(bytes(piece) for piece in encode_frames(header, buffers))

    async def trickle(comm: Comm) -> None:
        await comm.read()
        transport = comm._protocol.transport  # type: ignore[attr-defined]
        for start in range(0, len(wire), len(wire) // 6 + 1):  # ~1.2 s in all
            transport.write(wire[start : start + len(wire) // 6 + 1])
            await asyncio.sleep(0.2)
        await comm.read()  # then fall silent

    listener = loop_listener(trickle, Security(token=TOKEN))

    async def scenario() -> None:
        comm = await connect(listener.address, Security(token=TOKEN))
        comm.write({"op": "go"})
        reply = await comm.read(timeout=0.5)
        assert pickle_loads(reply["data"]) == b"t" * 1_000_000
        with pytest.raises(TimeoutError, match=r"within 0\.5s"):
            await comm.read(timeout=0.5)
        await comm.close()

    _run(asyncio.new_event_loop, scenario())
