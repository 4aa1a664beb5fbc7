"""Framed msgpack connections over asyncio, with the handshake done before anything else.

Reads go straight from the socket into their final buffers (``asyncio.BufferedProtocol``
driving the pure ``FrameDecoder``). A message with buffers (large data, see
``storied.protocol.frames``) is written as its small header and then each buffer in bounded
chunks, waiting for the transport to drain between them: nothing is joined or copied whole,
and later messages queue behind it so order is kept. ``comm.max-frame-size`` bounds control
messages on both ends of every connection; a sender refuses an oversized one with
``FrameTooLarge`` rather than have the peer cut the connection.

Until a connection has authenticated, it may hold at most one message of at most
``HANDSHAKE_MAX_FRAME`` bytes, must finish (TLS included) within the listener's handshake
timeout, and counts against the listener's cap on unauthenticated connections: a stranger can
cost a bounded amount of memory and time, and can never reach a handler.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from storied.comm.security import Security, check_listener, is_loopback
from storied.protocol import compression, handshake
from storied.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    PLAIN_OPENING,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    encode_frames,
)
from storied.protocol.serialize import compress_buffers, dumps_with_buffers, loads

logger = logging.getLogger("storied.comm")

HANDSHAKE_MAX_FRAME = 4096
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_MAX_UNAUTHENTICATED = 256
_READ_QUEUE_HIGH_WATER = 64
_BACKLOG = 1024
#: a buffer is handed to the transport this much at a time, so at most this much is copied
#: into the transport's own buffer when the socket cannot take it all at once
_WRITE_CHUNK = 4 * 2**20


class CommClosedError(ConnectionError):
    """The connection is closed; ``reason`` says why when known."""


class FrameTooLarge(ValueError):
    """A control message is larger than ``comm.max-frame-size``; it was not sent."""


def check_frame_size(size: int, limit: int) -> None:
    if size > limit:
        raise FrameTooLarge(
            f"a message of {size} bytes exceeds comm.max-frame-size ({limit} bytes) and was "
            "not sent; data (task arguments, results, scattered values) is not bound by this "
            "limit, so this is a large control message: send less at once, or raise "
            "comm.max-frame-size on every machine (docs/configuration.md)"
        )


def configured_max_frame_size() -> int:
    from storied import config

    return config.parse_bytes(config.get("comm.max-frame-size"))


def configured_compression() -> str | None:
    """The codec ``comm.compression`` names here (``ValueError`` if unknown or missing)."""
    from storied import config

    return compression.resolve(config.get("comm.compression"))


def parse_address(address: str) -> tuple[str, str, int]:
    """Split ``tcp://host:port`` into its parts, with a clear error for anything else."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str like 'tcp://127.0.0.1:8786', not {address!r}")
    scheme, sep, rest = address.rpartition("://")
    if not sep:
        scheme = "tcp"
    if scheme not in ("tcp", "tls"):
        raise ValueError(
            f"unsupported address scheme {scheme!r} in {address!r}: use tcp:// or tls://"
        )
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"address {address!r} has no port: use tcp://HOST:PORT")
    return scheme, host.strip("[]") or "0.0.0.0", int(port_text)


def format_address(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _socket_address(transport: asyncio.BaseTransport, which: str, scheme: str) -> str:
    address = transport.get_extra_info(which) or ("?", 0)
    return format_address(scheme, address[0], address[1])


class _FramedProtocol(asyncio.BufferedProtocol):
    """Buffers decoded messages for ``Comm.read`` and applies back-pressure both ways.

    It starts in handshake mode (small frames, one queued message at most); ``authenticated``
    lifts those limits. Any protocol violation closes the connection and is logged with the
    peer's address.
    """

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.peer = self.local = f"{scheme}://?"
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self.handshaking = True
        #: the largest control message this side sends (set with authentication)
        self.max_frame_size = HANDSHAKE_MAX_FRAME
        self.messages: collections.deque[Any] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed_reason: str | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        #: grows as bytes arrive: a large message in flight is progress, not silence
        self.bytes_received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = _socket_address(transport, "peername", self.scheme)
        self.local = _socket_address(transport, "sockname", self.scheme)

    def authenticated(self, max_frame_size: int) -> None:
        """The handshake succeeded: accept full-size frames and queue as usual."""
        self.handshaking = False
        self.decoder.max_frame_size = self.max_frame_size = max_frame_size
        self.decoder.accept_buffers = True

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        try:
            for frame in self.decoder.buffer_updated(nbytes):
                self.messages.append(loads(frame) if type(frame) is bytes else loads(*frame))
                if self.handshaking and len(self.messages) > 1:
                    raise ProtocolError("more than one message before the handshake completed")
        except (ProtocolError, ValueError) as exc:
            logger.warning("Closing connection with %s: protocol error: %s", self.peer, exc)
            self.fail(f"protocol error: {exc}")
            return
        if len(self.messages) > _READ_QUEUE_HIGH_WATER and not self._reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def fail(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        if self.transport is not None:
            self.transport.abort()
        self._wake_reader()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed_reason is None:
            self.closed_reason = f"connection lost: {exc}" if exc else "closed by peer"
        self._wake_reader()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._drain_waiter = None

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_message(self) -> Any:
        while not self.messages:
            if self.closed_reason is not None:
                raise CommClosedError(self.closed_reason)
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        msg = self.messages.popleft()
        if self._reading_paused and len(self.messages) < _READ_QUEUE_HIGH_WATER // 2:
            assert self.transport is not None
            self.transport.resume_reading()
            self._reading_paused = False
        return msg

    async def drain(self) -> None:
        if self._drain_waiter is not None:
            await self._drain_waiter


class Comm(abc.ABC):
    """One connection carrying msgpack messages: over TCP, or in memory within a process."""

    peer_address: str
    local_address: str
    name: str

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name or ''} {self.local_address} -> {self.peer_address}>"
        )

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @property
    @abc.abstractmethod
    def closed_reason(self) -> str | None: ...

    @abc.abstractmethod
    async def read(self, timeout: float | None = None) -> Any: ...

    @abc.abstractmethod
    def write(self, msg: Any) -> None: ...

    @abc.abstractmethod
    async def send(self, msg: Any) -> None: ...

    @abc.abstractmethod
    def abort(self, reason: str = "closed locally") -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def request(self, msg: Any, timeout: float | None = None) -> Any:
        """Send one message and wait for the one reply."""
        await self.send(msg)
        return await self.read(timeout)


class TCPComm(Comm):
    """A TCP (or TLS) connection carrying msgpack messages, each in its own frame."""

    def __init__(self, protocol: _FramedProtocol) -> None:
        self._protocol = protocol
        self.peer_address = protocol.peer
        self.local_address = protocol.local
        self.name = ""
        #: pieces of messages with buffers not yet handed to the transport, in order
        self._outgoing: collections.deque[Any] = collections.deque()
        #: the codec large data is compressed with on this link (agreed in the handshake)
        self.compression: str | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        transport = self._protocol.transport
        return (
            self._protocol.closed_reason is not None
            or transport is None
            or (transport.is_closing())
        )

    @property
    def closed_reason(self) -> str | None:
        return self._protocol.closed_reason

    async def read(self, timeout: float | None = None) -> Any:
        """The next message; ``timeout`` bounds silence, so a large message still arriving
        is waited for however long it takes."""
        if timeout is None:
            return await self._protocol.next_message()
        while True:
            received = self._protocol.bytes_received
            try:
                return await asyncio.wait_for(self._protocol.next_message(), timeout)
            except TimeoutError:
                if self._protocol.bytes_received == received:
                    raise TimeoutError(
                        f"no message from {self.peer_address} within {timeout}s"
                    ) from None

    def write(self, msg: Any) -> None:
        if self.closed:
            raise CommClosedError(self._protocol.closed_reason or "closed")
        header, buffers = dumps_with_buffers(msg)
        if buffers and self.compression:
            header, buffers = compress_buffers(header, buffers, self.compression)
        if buffers:
            pieces = encode_frames(header, buffers)
            check_frame_size(len(pieces[0]) - HEADER_SIZE, self._protocol.max_frame_size)
        else:
            check_frame_size(len(header), self._protocol.max_frame_size)
            if self._writer is None:
                transport = self._protocol.transport
                assert transport is not None
                transport.write(encode_frame(header))
                return
            pieces = [encode_frame(header)]
        self._outgoing.extend(pieces)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_out())

    async def _write_out(self) -> None:
        """Hand queued pieces to the transport, big ones in chunks as it drains."""
        protocol = self._protocol
        try:
            while self._outgoing:
                view = memoryview(self._outgoing.popleft())
                for start in range(0, max(view.nbytes, 1), _WRITE_CHUNK):
                    await protocol.drain()
                    if self.closed:
                        return
                    assert protocol.transport is not None
                    protocol.transport.write(view[start : start + _WRITE_CHUNK])
        finally:
            self._outgoing.clear()
            self._writer = None

    def agree_compression(self, local: str | None, remote: Any) -> None:
        """Compress large data on this link if both ends chose the same codec and they are on
        different hosts (``storied.protocol.compression.link_codec``)."""
        peer_host = parse_address(self.peer_address)[1]
        same_host = is_loopback(peer_host) or peer_host == parse_address(self.local_address)[1]
        self.compression = compression.link_codec(local, remote, same_host)
        if self.compression:
            logger.debug("Compressing large data to %s with %s", self.peer_address, local)

    async def send(self, msg: Any) -> None:
        self.write(msg)
        if self._writer is not None:
            await asyncio.shield(self._writer)
        await self._protocol.drain()

    def abort(self, reason: str = "closed locally") -> None:
        self._protocol.fail(reason)

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            if self._writer is not None:  # what was written goes out first, as with small ones
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._writer)
            if self._protocol.closed_reason is None:
                self._protocol.closed_reason = "closed locally"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._protocol.drain(), 1)
            transport.close()


async def connect(
    address: str,
    security: Security | None = None,
    timeout: float = 10.0,
    max_frame_size: int | None = None,
) -> Comm:
    """Open an authenticated connection, retrying refused connects until ``timeout``.

    ``max_frame_size`` defaults to ``comm.max-frame-size`` from config, as for listeners, and
    the codec offered for large data to ``comm.compression``.

    Raises ``AuthenticationError`` when either side cannot prove it holds the token, and
    ``ConnectionError`` when TLS fails; neither is retried.
    """
    security = security or Security()
    local = _local_listeners.get(address)
    max_frame_size = max_frame_size or configured_max_frame_size()
    codec = configured_compression()
    if local is not None and local.admits_locally(security):
        return local.connect_locally(max_frame_size)
    scheme, host, port = parse_address(address)
    if scheme == "tls" and not security.uses_tls:
        raise ValueError(f"{address} is a tls:// address but no TLS certificates were given")
    tls_context = security.client_context()
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _FramedProtocol(scheme),
                    host,
                    port,
                    ssl=tls_context,
                    server_hostname="" if tls_context else None,
                    ssl_handshake_timeout=remaining if tls_context else None,
                ),
                remaining,
            )
            break
        except TimeoutError:
            raise TimeoutError(f"could not connect to {address} within {timeout}s") from None
        except ssl.SSLError as exc:
            hint = ""
            if getattr(exc, "reason", None) == "WRONG_VERSION_NUMBER":
                hint = " (the listener does not speak TLS: connect with tcp:// and no certificates)"
            raise ConnectionError(f"TLS handshake with {address} failed: {exc}{hint}") from exc
        except OSError as exc:
            if time.monotonic() + delay > deadline:
                raise OSError(
                    f"could not connect to {address} within {timeout}s: {exc.strerror or exc}"
                ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
    comm = TCPComm(protocol)
    if tls_context is None:
        assert protocol.transport is not None
        protocol.transport.write(PLAIN_OPENING)
    try:
        hello = await comm.read(max(deadline - time.monotonic(), 1.0))
        answer = {**handshake.client_answer(hello, security.token), "compression": codec}
        comm.write(answer)
        welcome = await comm.read(max(deadline - time.monotonic(), 1.0))
        handshake.client_verify(hello, answer, welcome, security.token)
    except handshake.AuthenticationError as exc:
        comm.abort("handshake failed")
        raise handshake.AuthenticationError(f"cannot connect to {address}: {exc}") from None
    except CommClosedError as exc:
        hint = ""
        if tls_context is None and not protocol.bytes_received:
            hint = (
                "; a TLS listener closes plain connections at once: if it uses TLS, connect "
                "to tls://... with Security(tls_ca_file=..., tls_cert=..., tls_key=...)"
            )
        raise CommClosedError(
            f"{address} closed the connection during the handshake: {exc}{hint}"
        ) from None
    except BaseException:
        comm.abort("handshake failed")
        raise
    protocol.authenticated(max_frame_size)
    comm.agree_compression(codec, hello.get("compression"))
    return comm


Handler = Callable[[Comm], Awaitable[None]]

#: listeners of this process by address, for in-memory connections from the same event loop
_local_listeners: dict[str, Listener] = {}


class Listener:
    """Accepts connections, authenticates them, and hands each to ``handler`` in its own task.

    A connection reaches ``handler`` only after TLS (if configured) and the token handshake
    succeed within ``handshake_timeout`` seconds. At most ``max_unauthenticated`` connections
    may be mid-handshake at once; more are closed on arrival.
    """

    def __init__(
        self,
        address: str,
        handler: Handler,
        security: Security | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED,
        compression: str | None = None,
    ) -> None:
        self.security = security or Security()
        self.scheme, self.host, self.port = parse_address(address)
        if self.security.uses_tls:
            self.scheme = "tls"
        self.handler = handler
        self.max_frame_size = max_frame_size
        self.handshake_timeout = handshake_timeout
        self.max_unauthenticated = max_unauthenticated
        #: the codec offered for large data (a name from ``storied.protocol.compression``)
        self.compression = compression
        self._tls_context = self.security.server_context()
        self._sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._comms: set[Comm] = set()
        self._unauthenticated = 0
        self._refused_while_full = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        return format_address(self.scheme, self.host, self.port)

    async def start(self) -> None:
        """Bind every address ``host`` resolves to (one port for all) and start accepting.

        We accept sockets ourselves rather than through ``loop.create_server`` so that TLS
        starts inside each connection's task: a failed or slow TLS handshake then counts
        against the limits and is logged with the peer's address like any other refusal.
        """
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            listening = socket.socket(family, kind, proto)
            self._sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listening.bind((sockaddr[0], self.port, *sockaddr[2:]))
            listening.listen(_BACKLOG)
            listening.setblocking(False)
            self.port = listening.getsockname()[1]
        self._accepting = [
            asyncio.ensure_future(self._accept_forever(listening)) for listening in self._sockets
        ]
        self._loop = loop
        _local_listeners[self.address] = self

    def admits_locally(self, security: Security) -> bool:
        """Whether a peer on this process and loop may skip the socket: only if it holds exactly
        the credentials of this listener (token and certificates), else it goes through TCP
        and proves what it holds there."""
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False
        return same_loop and security == self.security

    def connect_locally(self, max_frame_size: int) -> Comm:
        """An in-memory connection to this listener; the handler gets the other end. Each end
        refuses to send messages above its own side's limit, as over TCP."""
        from storied.comm.local import LocalComm

        client, server = LocalComm.pair(f"local://{id(self)}-{len(self._tasks)}", self.address)
        client.max_frame_size, server.max_frame_size = max_frame_size, self.max_frame_size
        task = asyncio.ensure_future(self._handle(server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client

    async def _accept_forever(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listening)
            except OSError as exc:  # e.g. out of file descriptors: back off, keep serving
                logger.error("Could not accept a connection on %s: %s", self.address, exc)
                await asyncio.sleep(0.1)
                continue
            self._accept(sock)

    def _accept(self, sock: socket.socket) -> None:
        try:
            peer = format_address(self.scheme, *sock.getpeername()[:2])
        except OSError:  # the peer is already gone
            sock.close()
            return
        if self._unauthenticated >= self.max_unauthenticated:
            if not self._refused_while_full:
                logger.warning(
                    "Refusing connection from %s: %d connections are already authenticating "
                    "(max_unauthenticated); refusing more until some finish",
                    peer,
                    self._unauthenticated,
                )
            self._refused_while_full += 1
            sock.close()
            return
        if self._refused_while_full:
            logger.warning(
                "Accepting connections again after refusing %d", self._refused_while_full
            )
            self._refused_while_full = 0
        self._unauthenticated += 1
        task = asyncio.ensure_future(self._serve(sock, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, sock: socket.socket, peer: str) -> None:
        protocol = _FramedProtocol(self.scheme)
        try:
            async with asyncio.timeout(self.handshake_timeout):
                comm = await self._authenticate(sock, protocol)
        except handshake.AuthenticationError as exc:
            logger.warning("Refused connection from %s: %s", peer, exc)
            await TCPComm(protocol).close()  # closes gracefully, so the refusal reaches the peer
            return
        except TimeoutError:
            logger.warning(
                "Closing connection from %s: no handshake within %ss", peer, self.handshake_timeout
            )
            self._drop(sock, protocol, "handshake timed out")
            return
        except ssl.SSLError as exc:
            logger.warning("Refused connection from %s: TLS handshake failed: %s", peer, exc)
            self._drop(sock, protocol, "TLS handshake failed")
            return
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
            logger.info("Connection from %s closed during the handshake: %s", peer, reason)
            self._drop(sock, protocol, "handshake failed")
            return
        except BaseException:
            self._drop(sock, protocol, "listener closed")
            raise
        finally:
            self._unauthenticated -= 1
        await self._handle(comm)

    async def _handle(self, comm: Comm) -> None:
        """Serve an authenticated connection until it ends."""
        self._comms.add(comm)
        try:
            await self.handler(comm)
        except CommClosedError:
            pass
        except Exception:
            logger.exception("Error while serving connection from %s", comm.peer_address)
        finally:
            self._comms.discard(comm)
            await comm.close()

    async def _authenticate(self, sock: socket.socket, protocol: _FramedProtocol) -> Comm:
        """TLS (if configured), then the token handshake; returns the authenticated comm."""
        loop = asyncio.get_running_loop()
        # uvloop returns its TLS layer as the protocol here, so keep hold of our own.
        await loop.connect_accepted_socket(
            lambda: protocol,
            sock,
            ssl=self._tls_context,
            ssl_handshake_timeout=self.handshake_timeout if self._tls_context else None,
        )
        comm = TCPComm(protocol)
        token = self.security.token
        hello = {**handshake.server_hello(bool(token)), "compression": self.compression}
        comm.write(hello)
        answer = await comm.read()
        try:
            welcome = handshake.server_verify(hello, answer, token)
        except handshake.AuthenticationError as exc:
            comm.write({"op": "refused", "reason": str(exc)})
            raise
        comm.write(welcome)
        protocol.authenticated(self.max_frame_size)
        comm.agree_compression(self.compression, answer.get("compression"))
        return comm

    @staticmethod
    def _drop(sock: socket.socket, protocol: _FramedProtocol, reason: str) -> None:
        """Abort a connection that failed before authenticating (the socket may have no
        transport yet, so close it too; closing twice is harmless)."""
        protocol.fail(reason)
        sock.close()

    async def close(self) -> None:
        if _local_listeners.get(self.address) is self:
            del _local_listeners[self.address]
        for task in self._accepting:
            task.cancel()
        for listening in self._sockets:
            listening.close()
        for comm in list(self._comms):
            comm.abort("listener closed")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._accepting, *self._tasks, return_exceptions=True)


class ConnectionPool:
    """Reuses connections to peers (worker-to-worker and client-to-worker transfers)."""

    def __init__(self, security: Security | None, timeout: float = 10.0) -> None:
        self.security = security
        self.timeout = timeout
        self._idle: dict[str, list[Comm]] = collections.defaultdict(list)
        self._busy: set[Comm] = set()

    async def request(self, address: str, msg: Any, timeout: float | None = None) -> Any:
        """One request/reply exchange with ``address`` on a pooled connection."""
        idle = self._idle[address]
        comm = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                comm = candidate
                break
        if comm is None:
            comm = await connect(address, self.security, self.timeout)
        self._busy.add(comm)
        try:
            reply = await comm.request(msg, timeout)
        except BaseException:
            comm.abort("request failed")
            raise
        finally:
            self._busy.discard(comm)
        if not comm.closed:
            idle.append(comm)
        return reply

    def remove(self, address: str) -> None:
        for comm in self._idle.pop(address, []):
            comm.abort("peer removed")

    async def close(self) -> None:
        comms = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        for comm in comms:
            comm.abort("pool closed")


def configured_listener(
    address: str, handler: Handler, security: Security, *, insecure: bool = False
) -> Listener:
    """A Listener with the limits from config (``comm.*``), as scheduler and workers use.

    Raises ``InsecureListenerError`` for a port beyond loopback without a token or TLS unless
    ``insecure`` (see ``check_listener``), before anything is bound."""
    from storied import config

    check_listener(parse_address(address)[1], security, insecure)
    return Listener(
        address,
        handler,
        security,
        max_frame_size=configured_max_frame_size(),
        handshake_timeout=config.parse_timedelta(config.get("comm.handshake-timeout"))
        or DEFAULT_HANDSHAKE_TIMEOUT,
        max_unauthenticated=int(config.get("comm.max-unauthenticated")),
        compression=configured_compression(),
    )
