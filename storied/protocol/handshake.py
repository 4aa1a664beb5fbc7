"""Challenge-response authentication with a shared secret; the secret never crosses the wire.

The server opens with a fresh random nonce; the client answers with its own nonce and an HMAC
of both under the token; the server answers with an HMAC proving it knows the token too.
Fresh nonces on both sides make a recorded exchange useless for a later connection, and the
two HMACs carry different labels so one side's proof cannot be reflected back as the other's.
A client holding a token refuses a server that does not ask for one: such a server could not
prove it is the cluster the token belongs to.

Only these small msgpack messages are read before the handshake succeeds: nothing is
unpickled. Every function here is pure and raises ``AuthenticationError`` on any input it does
not accept, so hostile input can be fuzzed against them directly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

PROTOCOL_VERSION = 1
NONCE_SIZE = 32


class AuthenticationError(ConnectionError):
    """The peer could not prove it holds the cluster's token (or we could not)."""


def _mac(token: str, label: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(token.encode(), label + server_nonce + client_nonce, hashlib.sha256).digest()


def server_hello(auth_required: bool) -> dict[str, Any]:
    """The first message a server sends on every new connection."""
    return {
        "op": "hello",
        "version": PROTOCOL_VERSION,
        "auth": auth_required,
        "nonce": os.urandom(NONCE_SIZE),
    }


def client_answer(hello: Any, token: str | None) -> dict[str, Any]:
    """The client's reply to ``hello``; raises ``AuthenticationError`` if it cannot answer."""
    _expect(hello, "hello", "the peer did not open with a storied handshake")
    if hello.get("version") != PROTOCOL_VERSION:
        raise AuthenticationError(
            f"protocol version {_shorten(hello.get('version'))} is not supported "
            f"(this side speaks {PROTOCOL_VERSION})"
        )
    auth = hello.get("auth")
    if not isinstance(auth, bool):
        raise AuthenticationError("malformed handshake: 'auth' must be true or false")
    server_nonce = _nonce(hello)
    if auth and not token:
        raise AuthenticationError(
            "the scheduler requires an auth token: pass security=Security(token=...), "
            "--auth-token or set STORIED_AUTH_TOKEN"
        )
    if token and not auth:
        raise AuthenticationError(
            "this side holds an auth token but the peer does not ask for one, so it cannot "
            "prove it belongs to your cluster; refusing to trust it"
        )
    client_nonce = os.urandom(NONCE_SIZE)
    answer: dict[str, Any] = {"op": "answer", "nonce": client_nonce}
    if token:
        answer["mac"] = _mac(token, b"client", server_nonce, client_nonce)
    return answer


def server_verify(hello: dict[str, Any], answer: Any, token: str | None) -> dict[str, Any]:
    """Check the client's answer; return the welcome message or raise ``AuthenticationError``."""
    _expect(answer, "answer", "the peer did not answer the handshake")
    client_nonce = _nonce(answer)
    welcome: dict[str, Any] = {"op": "welcome"}
    if token:
        _check_mac(
            answer,
            _mac(token, b"client", hello["nonce"], client_nonce),
            "wrong or missing auth token",
        )
        welcome["mac"] = _mac(token, b"server", hello["nonce"], client_nonce)
    return welcome


def client_verify(
    hello: dict[str, Any], answer: dict[str, Any], welcome: Any, token: str | None
) -> None:
    """Check that the server, too, knows the token (mutual authentication)."""
    if not isinstance(welcome, dict) or welcome.get("op") != "welcome":
        reason = welcome.get("reason") if isinstance(welcome, dict) else None
        raise AuthenticationError(
            f"the peer refused the connection: {_shorten(reason if reason else welcome)}"
        )
    if token:
        _check_mac(
            welcome,
            _mac(token, b"server", hello["nonce"], answer["nonce"]),
            "the peer could not prove it holds the token",
        )


def _expect(msg: Any, op: str, complaint: str) -> None:
    if not isinstance(msg, dict) or msg.get("op") != op:
        raise AuthenticationError(complaint)


def _check_mac(msg: dict[str, Any], expected: bytes, complaint: str) -> None:
    mac = msg.get("mac")
    if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
        raise AuthenticationError(complaint)


def _nonce(msg: dict[str, Any]) -> bytes:
    nonce = msg.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise AuthenticationError("malformed handshake nonce")
    return nonce


def _shorten(value: Any, limit: int = 200) -> str:
    """A peer-chosen value, cut short so it cannot flood our logs or error messages."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
