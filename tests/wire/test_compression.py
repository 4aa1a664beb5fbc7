"""Optional compression of large data (``comm.compression``): chosen per link, off between
processes of one host, lossless, and skipped for data that does not shrink."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storied import config
from storied.comm import Comm, Security, connect
from storied.comm.core import TCPComm
from storied.protocol import compression
from storied.protocol.serialize import (
    compress_buffers,
    dumps_data,
    dumps_with_buffers,
    loads,
    pickle_loads,
)

TOKEN = "compression-test-token"
pytest.importorskip("lz4.block")


def test_settings_resolve_as_dasks_do():
    assert compression.resolve(False) is None and compression.resolve(None) is None
    assert compression.resolve("auto") == "lz4"  # lz4 is installed here
    assert compression.resolve("lz4") == "lz4" and compression.resolve("zlib") == "zlib"
    with pytest.raises(ValueError, match=r"comm\.compression must be false, 'auto'"):
        compression.resolve("brotli")


def test_the_default_is_off_as_in_dask():
    dask_config = pytest.importorskip("dask.config")
    pytest.importorskip("distributed")
    assert config.get("comm.compression") is dask_config.get("distributed.comm.compression")
    assert compression.resolve(config.get("comm.compression")) is None


def test_a_link_compresses_only_between_hosts_that_chose_the_same_codec():
    assert compression.link_codec("lz4", "lz4", same_host=False) == "lz4"
    assert compression.link_codec("lz4", "lz4", same_host=True) is None
    assert compression.link_codec("lz4", "zlib", same_host=False) is None
    assert compression.link_codec("lz4", None, same_host=False) is None  # an older peer
    assert compression.link_codec(None, "lz4", same_host=False) is None


@pytest.mark.parametrize("codec", ["lz4", "zlib"])
def test_compressible_data_shrinks_and_comes_back_writable(codec):
    array = np.zeros(2_000_000)  # 16 MB of zeros
    header, buffers = dumps_with_buffers({"data": dumps_data(array), "n": 1})
    sent_header, sent = compress_buffers(header, buffers, codec)
    assert sum(memoryview(b).nbytes for b in sent) < array.nbytes // 100
    msg = loads(sent_header, [bytearray(b) for b in sent])  # as received: fresh memory
    received = pickle_loads(msg["data"])
    assert msg["n"] == 1 and np.array_equal(received, array) and received.flags.writeable


def test_incompressible_data_travels_as_it_is_after_one_small_trial():
    noise = np.random.default_rng(0).random(1_000_000)
    header, buffers = dumps_with_buffers({"data": dumps_data(noise)})
    assert compress_buffers(header, buffers, "lz4") == (header, buffers)


def test_only_the_buffers_that_shrink_are_compressed():
    mixed = {
        "zeros": dumps_data(np.zeros(500_000)),
        "noise": dumps_data(np.random.default_rng(1).random(500_000)),
    }
    header, buffers = dumps_with_buffers(mixed)
    sent_header, sent = compress_buffers(header, buffers, "lz4")
    sizes = [memoryview(b).nbytes for b in sent]
    assert sorted(sizes)[0] < 100_000 and sorted(sizes)[1] == 4_000_000
    msg = loads(sent_header, [bytearray(b) for b in sent])
    assert np.array_equal(pickle_loads(msg["noise"]), pickle_loads(mixed["noise"]))
    assert not pickle_loads(msg["zeros"]).any()


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.binary(min_size=1, max_size=64), st.integers(1, 4000)), max_size=4
    ),
    codec=st.sampled_from(["lz4", "zlib"]),
)
def test_any_buffers_round_trip(pieces, codec):
    """Repeated patterns (compressible) of any content and length arrive exactly as sent."""
    values = [pattern * repeat for pattern, repeat in pieces]
    header, buffers = dumps_with_buffers({"values": [dumps_data(v) for v in values]})
    sent_header, sent = compress_buffers(header, buffers, codec)
    msg = loads(sent_header, [bytearray(b) for b in sent])
    assert [pickle_loads(v) for v in msg["values"]] == values


def test_corrupt_or_unknown_compressed_data_is_a_malformed_message():
    header, buffers = dumps_with_buffers({"data": dumps_data(b"z" * 1_000_000)})
    sent_header, sent = compress_buffers(header, buffers, "lz4")
    with pytest.raises(ValueError, match="malformed message: corrupt lz4 data"):
        loads(sent_header, [bytearray(len(sent[0]))])  # a block of zeros is no lz4 data
    unknown = sent_header.replace(b"\xa3lz4", b"\xa3xyz")
    with pytest.raises(ValueError, match="'xyz', which this side cannot decompress"):
        loads(unknown, [bytearray(b) for b in sent])
    nested = msgpack.packb(msgpack.ExtType(2, msgpack.packb(["lz4", [None], sent_header])))
    with pytest.raises(ValueError, match="unknown extension type 2"):
        loads(nested, [bytearray(b) for b in sent])


async def _echo(comm: Comm) -> None:
    first = await comm.read()
    comm.write({"link": comm.compression})  # type: ignore[attr-defined]
    comm.compression = first["use"]  # type: ignore[attr-defined]
    while True:
        comm.write(await comm.read())


def test_loopback_links_never_compress_even_when_configured(loop_listener):
    with config.set({"comm.compression": "lz4"}):
        listener = loop_listener(_echo, Security(token=TOKEN), compression="lz4")

        async def scenario() -> tuple[Any, Any]:
            comm = await connect(listener.address, Security(token=TOKEN))
            comm.write({"use": None})
            reply = await comm.read(timeout=10)
            await comm.close()
            return comm.compression, reply["link"]  # type: ignore[attr-defined]

        assert asyncio.run(scenario()) == (None, None)


def test_a_compressing_link_carries_data_over_tcp_in_fewer_bytes(loop_listener):
    """Both ends compress (as between hosts): the data arrives intact in a fraction of the
    bytes, and incompressible data still arrives whole."""
    listener = loop_listener(_echo, Security(token=TOKEN))
    zeros = np.zeros(5_000_000)  # 40 MB
    noise = np.random.default_rng(2).random(500_000)

    async def scenario() -> None:
        comm = await connect(listener.address, Security(token=TOKEN))
        assert isinstance(comm, TCPComm)
        comm.write({"use": "lz4"})
        await comm.read(timeout=10)
        comm.compression = "lz4"
        before = comm._protocol.bytes_received
        comm.write({"data": dumps_data(zeros)})
        echoed = pickle_loads((await comm.read(timeout=30))["data"])
        assert np.array_equal(echoed, zeros) and echoed.flags.writeable
        assert comm._protocol.bytes_received - before < zeros.nbytes // 50
        comm.write({"data": dumps_data(noise)})
        assert np.array_equal(pickle_loads((await comm.read(timeout=30))["data"]), noise)
        await comm.close()

    asyncio.run(scenario())


def test_an_unknown_setting_is_a_clear_error_at_connect(loop_listener):
    listener = loop_listener(_echo, Security(token=TOKEN))
    with config.set({"comm.compression": "snappy"}), pytest.raises(ValueError, match="snappy"):
        asyncio.run(connect(listener.address, Security(token=TOKEN)))


@settings(max_examples=200, deadline=None)
@given(
    # what msgpack can carry: a peer cannot send a larger integer
    codec=st.one_of(
        st.sampled_from(["lz4", "zlib"]), st.text(max_size=5), st.integers(-(2**63), 2**64 - 1)
    ),
    sizes=st.one_of(st.lists(st.one_of(st.none(), st.integers(-10, 2**40))), st.binary()),
    inner=st.binary(max_size=50),
    buffers=st.lists(st.binary(max_size=200), max_size=3),
)
def test_a_hostile_compressed_message_is_only_ever_a_malformed_one(codec, sizes, inner, buffers):
    """Whatever an authenticated peer puts in a compressed message, decoding it raises
    ValueError (the connection is closed as a protocol error) and nothing else."""
    header = msgpack.packb(msgpack.ExtType(2, msgpack.packb([codec, sizes, inner])))
    with contextlib.suppress(ValueError):
        loads(header, [bytearray(b) for b in buffers])
