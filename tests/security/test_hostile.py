"""Hostile input closes the offending connection, gets logged, and breaks nothing else.

First the pure pieces (frame decoder, message decoding, handshake) are fuzzed without sockets;
then single listeners are pushed against each limit; then random attacks are thrown at a live
scheduler and live workers while a real workload runs through them.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storied import Client, LocalCluster
from storied.comm import Comm, Security, connect
from storied.protocol import handshake
from storied.protocol.frames import HEADER_SIZE, FrameDecoder, ProtocolError, encode_frame
from storied.protocol.serialize import dumps, loads
from tests.security.conftest import RawPeer, wait_for

TOKEN = "hostile-test-token"
PURE = settings(max_examples=150, deadline=None)

msgpack_ints = st.integers(-(2**63), 2**64 - 1)  # msgpack cannot encode ints beyond these
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
handshake_lookalikes = st.fixed_dictionaries(
    {"op": st.sampled_from(["hello", "answer", "welcome", "refused"]) | st.text(max_size=8)},
    optional={
        "version": st.just(handshake.PROTOCOL_VERSION) | msgpack_values,
        "auth": st.booleans() | msgpack_values,
        "nonce": st.binary(min_size=30, max_size=34) | msgpack_values,
        "mac": st.binary(min_size=31, max_size=33) | msgpack_values,
        "reason": msgpack_values,
    },
)
hostile_messages = msgpack_values | handshake_lookalikes
tokens = st.text(min_size=1, max_size=24)


def wire(msg: Any) -> Any:
    """What the peer sees after ``msg`` crosses the wire."""
    return loads(dumps(msg))


# ---------------------------------------------------------------------------------- pure fuzz


@PURE
@given(
    # msgpack never starts with 0xc1: a frame that does announces buffers (storied.protocol.frames)
    st.lists(st.binary(max_size=64).filter(lambda p: p[:1] != b"\xc1"), max_size=12),
    st.integers(1, 80),
)
def test_frame_decoder_reassembles_frames_however_the_stream_is_cut(payloads, chunk):
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(max_frame_size=64)
    frames = []
    for start in range(0, len(stream), chunk):
        frames += decoder.feed(stream[start : start + chunk])
    assert frames == [p for p in payloads if p]  # an empty frame carries no message
    assert decoder.pending == 0


@PURE
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(0, 256))
def test_frame_decoder_on_garbage_raises_only_protocol_error_and_stays_bounded(chunks, limit):
    decoder = FrameDecoder(max_frame_size=limit)
    try:
        for chunk in chunks:
            assert all(len(frame) <= limit for frame in decoder.feed(chunk))
            assert decoder.pending < HEADER_SIZE + limit
    except ProtocolError as exc:
        assert "exceeds the maximum" in str(exc) or "before the handshake" in str(exc)


@PURE
@given(st.binary(max_size=256) | msgpack_values.map(dumps).map(lambda b: b[: len(b) // 2]))
def test_loads_rejects_garbage_with_value_error_only(payload):
    with contextlib.suppress(ValueError):
        loads(payload)


@PURE
@given(hostile_messages, st.none() | tokens)
def test_client_answers_only_a_well_formed_hello(hello, token):
    try:
        answer = handshake.client_answer(hello, token)
    except handshake.AuthenticationError:
        return
    assert hello["op"] == "hello" and hello["auth"] is bool(token)
    assert len(hello["nonce"]) == handshake.NONCE_SIZE
    assert ("mac" in answer) is bool(token)


@PURE
@given(hostile_messages, tokens)
def test_server_never_accepts_a_forged_answer(answer, token):
    with pytest.raises(handshake.AuthenticationError):
        handshake.server_verify(handshake.server_hello(True), answer, token)


@PURE
@given(hostile_messages, tokens)
def test_client_never_accepts_a_forged_welcome(welcome, token):
    hello = wire(handshake.server_hello(True))
    answer = handshake.client_answer(hello, token)
    with pytest.raises(handshake.AuthenticationError):
        handshake.client_verify(hello, answer, welcome, token)


@PURE
@given(tokens, tokens)
def test_handshake_succeeds_exactly_when_both_hold_the_same_token(server_token, client_token):
    hello = handshake.server_hello(True)
    answer = handshake.client_answer(wire(hello), client_token)
    if server_token != client_token:
        with pytest.raises(handshake.AuthenticationError, match="wrong or missing"):
            handshake.server_verify(hello, wire(answer), server_token)
        return
    welcome = handshake.server_verify(hello, wire(answer), server_token)
    handshake.client_verify(wire(hello), answer, wire(welcome), client_token)


# --------------------------------------------------------------------- one listener, limits


async def _echo(comm: Comm) -> None:
    while True:
        comm.write(await comm.read())


@pytest.fixture
def listen(caplog: pytest.LogCaptureFixture, loop_listener: Any) -> Any:
    """Starts echo listeners (token ``TOKEN``) on a background loop; closes them after."""
    caplog.set_level("INFO", logger="storied.comm")
    return lambda **options: loop_listener(_echo, Security(token=TOKEN), **options)


def _authenticate(peer: RawPeer, token: str = TOKEN, hello: Any = None) -> None:
    """Complete the handshake as a genuine client would (``hello`` if already read)."""
    hello = peer.read() if hello is None else hello
    answer = handshake.client_answer(hello, token)
    peer.send(answer)
    handshake.client_verify(hello, answer, peer.read(), token)


def _logged(caplog: pytest.LogCaptureFixture, peer: RawPeer, text: str) -> bool:
    return any(
        f"127.0.0.1:{peer.local_port}" in r.getMessage() and text in r.getMessage()
        for r in caplog.records
    )


def test_a_connection_that_never_finishes_its_handshake_is_closed_and_logged(listen, caplog):
    listener = listen(handshake_timeout=0.3)
    with RawPeer(listener.address) as silent, RawPeer(listener.address) as slow:
        slow.send_raw(struct.pack("!I", 100) + b"partial")
        assert silent.closed_by_server(within=5) and slow.closed_by_server(within=5)
        assert _logged(caplog, silent, "no handshake within 0.3s")
        assert _logged(caplog, slow, "no handshake within 0.3s")


def test_unauthenticated_connections_are_capped(listen, caplog):
    listener = listen(max_unauthenticated=2)
    idle = [RawPeer(listener.address), RawPeer(listener.address)]
    hellos = [peer.read() for peer in idle]
    assert [hello["op"] for hello in hellos] == ["hello", "hello"]
    with RawPeer(listener.address) as turned_away, pytest.raises(EOFError):
        turned_away.read()
    assert _logged(caplog, turned_away, "connections are already authenticating")
    _authenticate(idle[0], hello=hellos[0])  # once authenticated, a connection no longer counts
    idle[1].close()
    wait_for(lambda: listener._unauthenticated == 0, what="the idle peer to be let go")
    with RawPeer(listener.address) as admitted:
        _authenticate(admitted)
        admitted.send({"op": "ping"})
        assert admitted.read() == {"op": "ping"}
    idle[0].close()
    assert any(
        "Accepting connections again after refusing 1" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("authenticated", [False, True], ids=["before-auth", "after-auth"])
def test_an_oversized_frame_closes_the_connection_and_is_logged(listen, caplog, authenticated):
    listener = listen(max_frame_size=8192)
    with RawPeer(listener.address) as peer:
        if authenticated:
            _authenticate(peer)
            peer.send({"fits": b"x" * 5000})  # bigger than any handshake frame may be
            assert peer.read() == {"fits": b"x" * 5000}
        else:
            peer.read()
        limit = 8192 if authenticated else 4096
        peer.send_raw(struct.pack("!I", limit + 1))
        assert peer.closed_by_server()
        assert _logged(caplog, peer, f"frame of {limit + 1} bytes exceeds the maximum of {limit}")


def test_a_stranger_cannot_queue_messages_before_authenticating(listen, caplog):
    listener = listen()
    with RawPeer(listener.address) as peer:
        peer.read()
        peer.send_raw(b"".join(encode_frame(dumps({"op": "answer"})) for _ in range(50)))
        assert peer.closed_by_server()
        assert _logged(caplog, peer, "more than one message before the handshake completed")


def test_malformed_msgpack_after_the_handshake_closes_and_is_logged(listen, caplog):
    listener = listen()
    with RawPeer(listener.address) as peer:
        _authenticate(peer)
        peer.send_raw(encode_frame(b"\xc1"))  # 0xc1 is never valid msgpack
        assert peer.closed_by_server()
        assert _logged(caplog, peer, "protocol error: malformed message")


# --------------------------------------------------------------- a live cluster under attack


def slow_inc(x: int) -> int:
    time.sleep(0.002)  # simulated work, so the workload is still running during the attacks
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def inc(x: int) -> int:
    return x + 1


@dataclass(frozen=True)
class Attack:
    """One hostile connection: ``target`` is 'scheduler' or a worker index."""

    target: str
    kind: str
    data: Any

    def run(self, address: str) -> RawPeer:
        peer = RawPeer(address)
        if self.kind == "garbage":
            peer.send_raw(self.data)
        elif self.kind == "truncated":
            size, body = self.data
            peer.send_raw(struct.pack("!I", size) + body)
        elif self.kind == "oversized":
            authenticated, size = self.data
            if authenticated:
                _authenticate(peer, TOKEN)
            peer.send_raw(struct.pack("!I", size))
        elif self.kind == "junk":
            _authenticate(peer, TOKEN)
            for msg in self.data:
                peer.send(msg)
        return peer

    @property
    def server_must_hang_up(self) -> bool:
        return self.kind in ("oversized", "junk")


scheduler_ops = ["update-graph", "cancel", "heartbeat", "subscribe-topic", "client-desires-keys"]
first_messages = msgpack_values.filter(
    lambda m: (
        not (
            isinstance(m, dict)
            and m.get("op") in ("register-client", "register-worker", "identity")
        )
    )
)
# Hypothesis also draws string literals from storied's own source, so plain random text is
# sometimes a real operation ("close-client", "executions", ...) that the scheduler rightly
# serves. No operation starts with "?", so these are unknown however many ops get added.
unknown_ops = st.text(max_size=12).map(lambda op: f"?{op}")
bad_stream_messages = st.one_of(
    st.builds(
        lambda op, kw: {**kw, "op": op},  # kw may hold an "op" too; ours must win
        unknown_ops,
        st.dictionaries(st.text(max_size=6), msgpack_values, max_size=3),
    ),
    st.builds(
        lambda op, v: {"op": op, "zz_unexpected": v}, st.sampled_from(scheduler_ops), msgpack_values
    ),
    st.builds(lambda m: {"op": "request", "id": 1, "method": m, "kwargs": {}}, unknown_ops),
    msgpack_values.filter(lambda m: not isinstance(m, (dict, list))),
)
scheduler_junk = st.one_of(
    first_messages.map(lambda m: [m]),
    st.builds(
        lambda cid, bad: [{"op": "register-client", "client": f"attacker-{cid}"}, [bad]],
        st.uuids(),
        bad_stream_messages,
    ),
    st.builds(
        lambda a, n: [{"op": "register-worker", "address": a, "nthreads": n}],
        msgpack_values.filter(lambda a: not isinstance(a, str)),
        msgpack_values,
    ),
)
worker_junk = st.one_of(
    msgpack_values.filter(lambda m: not isinstance(m, dict)).map(lambda m: [m]),
    st.builds(lambda op: [{"op": op}], unknown_ops),
    st.builds(
        lambda keys: [{"op": "get_data", "keys": keys}],
        st.none() | msgpack_ints | st.floats() | st.booleans(),
    ),
)


@st.composite
def attacks(draw: st.DrawFn) -> Attack:
    target = draw(st.sampled_from(["scheduler", "0", "1"]))
    kind = draw(st.sampled_from(["garbage", "truncated", "oversized", "junk"]))
    if kind == "garbage":
        data: Any = draw(st.binary(min_size=1, max_size=2048))
    elif kind == "truncated":
        size = draw(st.integers(1, 4096))
        data = (size, draw(st.binary(max_size=size - 1)))
    elif kind == "oversized":
        authenticated = draw(st.booleans())
        floor = 256 * 2**20 if authenticated else 4096
        data = (authenticated, draw(st.integers(floor + 1, 2**32 - 1)))
    else:
        data = draw(scheduler_junk if target == "scheduler" else worker_junk)
    return Attack(target, kind, data)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LocalCluster, Client]]:
    security = Security(token=TOKEN)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, security=security
        ) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def _still_serving(cluster: LocalCluster, client: Client, n: int) -> None:
    assert client.submit(inc, n, pure=False).result(timeout=10) == n + 1

    async def ask_workers() -> None:
        for worker in cluster.workers.values():
            comm = await connect(worker.address, cluster.security, timeout=5)
            try:
                assert (await comm.request({"op": "get_data", "keys": []}, 5))["status"] == "OK"
            finally:
                await comm.close()

    cluster._loop_thread.run(ask_workers())


def test_a_live_cluster_shrugs_off_hostile_peers_while_working(live, caplog):
    cluster, client = live
    caplog.set_level("INFO", logger="storied.comm")
    firsts = client.map(slow_inc, range(1000))
    totals = client.map(add, firsts, firsts[::-1])
    addresses = {
        "scheduler": cluster.scheduler_address,
        **{name: w.address for name, w in cluster.workers.items()},
    }
    idle = [RawPeer(address) for address in addresses.values()]  # open, and never speak
    checks = iter(range(10**6))

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(attacks())
    def attack(attack: Attack) -> None:
        with attack.run(addresses[attack.target]) as peer:
            if attack.server_must_hang_up:
                assert peer.closed_by_server(), attack
                wait_for(
                    lambda: any(
                        f"127.0.0.1:{peer.local_port}" in r.getMessage() for r in caplog.records
                    ),
                    what=f"a log line for {attack}",
                )
        _still_serving(cluster, client, next(checks))

    pending_when_attacks_began = sum(not f.done() for f in totals)
    attack()
    assert pending_when_attacks_began, "the workload was over before the attacks began"
    assert client.gather(totals) == [1001] * 1000
    assert len(cluster.scheduler.workers) == 2
    # Attackers that registered as clients were cut off (the scheduler may keep their entry
    # for its reconnect grace period, but not their connection).
    attackers = {c: s for c, s in cluster.scheduler.clients.items() if c != client.id}
    assert client.id in cluster.scheduler.clients
    assert all(stream.closed for stream in attackers.values())
    for peer in idle:
        peer.close()
