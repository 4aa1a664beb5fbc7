"""The pure framing codec, fuzzed: any message split any way arrives whole and unchanged."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storied.protocol.frames import (
    HEADER_SIZE,
    PLAIN_OPENING,
    WITH_BUFFERS,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    encode_frames,
)

#: a message is never empty: an empty frame is padding (PLAIN_OPENING), tested on its own below
plain = st.binary(min_size=1, max_size=300).filter(lambda b: b[0] != WITH_BUFFERS)
with_buffers = st.tuples(
    st.binary(max_size=200),
    st.lists(st.binary(max_size=3000), max_size=4),
)
messages = st.lists(st.one_of(plain, with_buffers), min_size=1, max_size=8)


def _wire(msgs: list) -> bytes:
    out = b""
    for msg in msgs:
        if isinstance(msg, bytes):
            out += encode_frame(msg)
        else:
            out += b"".join(bytes(piece) for piece in encode_frames(*msg))
    return out


def _plain(frames: list) -> list:
    """Decoded frames with their buffers as bytes, comparable to what was sent."""
    return [f if isinstance(f, bytes) else (f[0], [bytes(b) for b in f[1]]) for f in frames]


@settings(max_examples=300, deadline=None)
@given(msgs=messages, cuts=st.lists(st.integers(1, 5000), max_size=40))
def test_any_split_of_the_stream_decodes_to_the_messages_sent(msgs, cuts):
    stream = _wire(msgs)
    decoder = FrameDecoder(max_frame_size=4096, accept_buffers=True)
    frames = []
    offset = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[offset : offset + cut])
        offset += cut
    frames += decoder.feed(stream[offset:])
    assert _plain(frames) == [m if isinstance(m, bytes) else (m[0], m[1]) for m in msgs]
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(msgs=messages, fills=st.lists(st.integers(1, 10**6), min_size=1, max_size=60))
def test_reading_into_the_decoders_own_buffers_like_a_socket_does(msgs, fills):
    """The BufferedProtocol way: write at most len(get_buffer()) bytes, then report them."""
    stream = memoryview(_wire(msgs))
    decoder = FrameDecoder(max_frame_size=4096, accept_buffers=True)
    frames = []
    i = 0
    while stream:
        target = decoder.get_buffer()
        assert len(target) > 0
        n = min(len(target), len(stream), fills[i % len(fills)])
        target[:n] = stream[:n]
        stream = stream[n:]
        frames += decoder.buffer_updated(n)
        i += 1
    assert _plain(frames) == [m if isinstance(m, bytes) else (m[0], m[1]) for m in msgs]


def test_a_large_buffer_is_filled_in_place_not_through_scratch():
    payload = bytes(range(256)) * 8192  # 2 MiB
    pieces = encode_frames(b"header", [payload])
    decoder = FrameDecoder(accept_buffers=True)
    assert decoder.feed(bytes(pieces[0])) == []
    target = decoder.get_buffer()
    assert len(target) == len(payload)  # the whole destination, handed out at once
    target[:] = payload
    [(header, [buffer])] = decoder.buffer_updated(len(payload))
    assert header == b"header" and bytes(buffer) == payload


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_large_buffer_lands_in_private_memory_not_shmem():
    """Anonymous *shared* memory (mmap's default) is shmem: it gets no transparent huge pages,
    so receiving 100 MB cost 24,000 page faults, about as much CPU as the TCP copy itself."""
    size = 64 * 2**20
    decoder = FrameDecoder(accept_buffers=True)
    decoder.feed(bytes(encode_frames(b"h", [b"x" * size])[0]))
    target = decoder.get_buffer()
    shmem_before = _rss_kib("RssShmem")
    target[:] = b"\x01" * size  # touches every page, as the socket fills them
    assert _rss_kib("RssShmem") - shmem_before < size // 1024 // 4
    [(_, [buffer])] = decoder.buffer_updated(size)
    assert bytes(buffer[:4]) == b"\x01" * 4


def test_encoding_does_not_copy_the_buffers():
    data = bytearray(b"x" * 100)
    pieces = encode_frames(b"h", [data])
    data[0:1] = b"y"
    assert bytes(pieces[1][:1]) == b"y"


def test_buffers_have_no_size_limit_but_the_frame_does():
    decoder = FrameDecoder(max_frame_size=64, accept_buffers=True)
    header, *_ = encode_frames(b"h" * 10, [b"z" * 1000])
    [(_, [buffer])] = decoder.feed(bytes(header) + b"z" * 1000)
    assert bytes(buffer) == b"z" * 1000
    with pytest.raises(ProtocolError, match="frame of 65 bytes exceeds the maximum of 64"):
        decoder.feed(encode_frame(b"x" * 65))


def test_buffers_are_refused_unless_accepted():
    decoder = FrameDecoder(max_frame_size=4096)
    with pytest.raises(ProtocolError, match="before the handshake"):
        decoder.feed(bytes(encode_frames(b"h", [b"data"])[0]))


@given(count=st.integers(0, 2**32 - 1), room=st.integers(0, 64))
def test_a_buffer_list_longer_than_its_frame_is_refused(count, room):
    body = bytes([WITH_BUFFERS]) + struct.pack("!I", count) + b"\0" * room
    if 8 * count <= room:
        return  # a well-formed list
    with pytest.raises(ProtocolError, match="malformed message"):
        FrameDecoder(accept_buffers=True).feed(struct.pack("!I", len(body)) + body)


def test_an_impossible_buffer_size_is_a_protocol_error():
    body = bytes([WITH_BUFFERS]) + struct.pack("!IQ", 1, 2**62)
    with pytest.raises(ProtocolError, match="cannot allocate"):
        FrameDecoder(accept_buffers=True).feed(struct.pack("!I", len(body)) + body)


def test_a_plain_frame_is_its_length_then_its_payload():
    """Control messages look on the wire exactly as before buffers existed."""
    assert encode_frame(b"abc") == struct.pack("!I", 3) + b"abc"
    assert HEADER_SIZE == 4


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(0, 256))
def test_garbage_from_an_accepted_peer_raises_only_protocol_error_and_holds_what_it_sent(
    chunks, limit
):
    """Buffers are allocated lazily at the announced size; what is held is what arrived."""
    decoder = FrameDecoder(max_frame_size=limit, accept_buffers=True)
    received = 0
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            received += len(chunk)
            assert decoder.pending <= received
    except ProtocolError:
        pass


@given(msgs=messages, at=st.integers(0, 8))
def test_empty_frames_carry_no_message_wherever_they_come(msgs, at):
    """A plain client opens with empty frames (``PLAIN_OPENING``); the listener skips them."""
    decoder = FrameDecoder(max_frame_size=4096, accept_buffers=True)
    frames = decoder.feed(PLAIN_OPENING + _wire(msgs[:at]) + encode_frame(b"") + _wire(msgs[at:]))
    assert _plain(frames) == [m if isinstance(m, bytes) else (m[0], m[1]) for m in msgs]
    assert decoder.pending == 0
