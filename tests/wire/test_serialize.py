"""Data pickles with its large buffers out of band, uncopied, and round-trips exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from storied.protocol.serialize import (
    OUT_OF_BAND_MIN,
    Pickled,
    dumps,
    dumps_data,
    dumps_with_buffers,
    dumps_with_refs,
    loads,
    loads_with_refs,
    pickle_loads,
    token,
)


def _over_the_wire(msg):
    """What a receiver gets: the header decoded, the buffers as fresh writable memory."""
    header, buffers = dumps_with_buffers(msg)
    return loads(header, [bytearray(memoryview(b).cast("B")) for b in buffers])


def test_small_data_stays_plain_bytes_and_messages_stay_plain_msgpack():
    for value in (1, "text", b"small", [1, 2, 3], np.arange(10)):
        assert type(dumps_data(value)) is bytes
    msg = {"op": "task-finished", "key": "inc-1", "nbytes": 28}
    assert dumps_with_buffers(msg) == (dumps(msg), [])


def test_a_numpy_array_travels_out_of_band_without_a_copy():
    array = np.arange(1_000_000, dtype="f8")
    pickled = dumps_data(array)
    assert isinstance(pickled, Pickled)
    assert len(pickled.header) < 1000
    [buffer] = pickled.buffers
    assert np.shares_memory(np.frombuffer(buffer, dtype="f8"), array)
    received = pickle_loads(_over_the_wire({"data": pickled})["data"])
    assert np.array_equal(received, array) and received.flags.writeable


def test_a_pandas_frame_round_trips():
    frame = pd.DataFrame({"a": np.arange(100_000), "b": np.linspace(0, 1, 100_000)})
    pickled = dumps_data(frame)
    assert isinstance(pickled, Pickled) and pickled.buffers
    pd.testing.assert_frame_equal(pickle_loads(_over_the_wire(pickled)), frame)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_bytes_likes_keep_their_type_and_go_out_of_band(kind):
    value = kind(b"\x07" * (OUT_OF_BAND_MIN + 1))
    pickled = dumps_data(value)
    assert isinstance(pickled, Pickled) and len(pickled.header) < 200
    received = pickle_loads(_over_the_wire(pickled))
    assert type(received) is kind and bytes(received) == bytes(value)


def test_large_bytes_inside_task_arguments_go_out_of_band_beside_task_references():
    big = b"z" * (3 * OUT_OF_BAND_MIN)
    marker = object()
    payload, refs = dumps_with_refs(
        (([big, marker], {"b": bytearray(big)}), {}), lambda o: "dep-1" if o is marker else None
    )
    assert refs == ["dep-1"]
    assert isinstance(payload, Pickled) and len(payload.header) < 500
    (args, kwargs), _ = loads_with_refs(_over_the_wire(payload), {"dep-1": 42})
    assert args == [big, 42] and kwargs == {"b": bytearray(big)}


def test_a_large_in_band_pickle_travels_out_of_band_too():
    value = list(range(100_000))  # no buffers, but a pickle far above the inline size
    pickled = dumps_data(value)
    header, buffers = dumps_with_buffers({"data": pickled})
    assert len(header) < 100 and len(buffers) == 1
    assert pickle_loads(_over_the_wire({"data": pickled})["data"]) == value


def test_the_token_of_data_covers_its_buffers():
    a, b = np.zeros(100_000), np.ones(100_000)
    assert token(dumps_data(a)) != token(dumps_data(b))
    assert token(dumps_data(a)) == token(dumps_data(np.zeros(100_000)))


def test_a_message_referring_to_missing_buffers_is_malformed():
    header, buffers = dumps_with_buffers({"data": dumps_data(np.zeros(100_000))})
    with pytest.raises(ValueError, match="malformed message"):
        loads(header, buffers[:-1])
