"""Challenge-response authentication with a shared secret; the secret never crosses the wire.

The server opens with a fresh random nonce; the client answers with its own nonce and an HMAC
of both under the token; the server answers with an HMAC proving it knows the token too.
Fresh nonces on both sides make a recorded exchange useless for a later connection. Only
msgpack control messages are read before the handshake succeeds: nothing is unpickled.
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
    if not isinstance(hello, dict) or hello.get("op") != "hello":
        raise AuthenticationError("the peer did not open with a storied handshake")
    if hello.get("version") != PROTOCOL_VERSION:
        raise AuthenticationError(
            f"protocol version {hello.get('version')!r} is not supported "
            f"(this side speaks {PROTOCOL_VERSION})"
        )
    client_nonce = os.urandom(NONCE_SIZE)
    answer: dict[str, Any] = {"op": "answer", "nonce": client_nonce}
    if hello.get("auth"):
        if not token:
            raise AuthenticationError(
                "the scheduler requires an auth token: pass security=Security(token=...), "
                "--auth-token or set STORIED_AUTH_TOKEN"
            )
        answer["mac"] = _mac(token, b"client", _nonce(hello), client_nonce)
    return answer


def server_verify(hello: dict[str, Any], answer: Any, token: str | None) -> dict[str, Any]:
    """Check the client's answer; return the welcome message or raise ``AuthenticationError``."""
    if not isinstance(answer, dict) or answer.get("op") != "answer":
        raise AuthenticationError("the peer did not answer the handshake")
    client_nonce = _nonce(answer)
    welcome: dict[str, Any] = {"op": "welcome"}
    if hello["auth"]:
        assert token is not None
        expected = _mac(token, b"client", hello["nonce"], client_nonce)
        mac = answer.get("mac")
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
            raise AuthenticationError("wrong or missing auth token")
        welcome["mac"] = _mac(token, b"server", hello["nonce"], client_nonce)
    return welcome


def client_verify(
    hello: dict[str, Any], answer: dict[str, Any], welcome: Any, token: str | None
) -> None:
    """Check that the server, too, knows the token (mutual authentication)."""
    if not isinstance(welcome, dict) or welcome.get("op") != "welcome":
        reason = welcome.get("reason") if isinstance(welcome, dict) else None
        raise AuthenticationError(f"the scheduler refused the connection: {reason or welcome!r}")
    if hello.get("auth"):
        assert token is not None
        expected = _mac(token, b"server", hello["nonce"], answer["nonce"])
        mac = welcome.get("mac")
        if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
            raise AuthenticationError("the server could not prove it holds the token")


def _nonce(msg: dict[str, Any]) -> bytes:
    nonce = msg.get("nonce")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise AuthenticationError("malformed handshake nonce")
    return nonce
