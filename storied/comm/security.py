"""Who may connect: a shared token, TLS with mutual certificate verification, or both."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import ssl
import unicodedata
from dataclasses import dataclass

logger = logging.getLogger("storied.comm")

#: tokens shorter than this are refused: a short secret can be guessed by trying
MIN_TOKEN_LENGTH = 16


class InsecureListenerError(ValueError):
    """A listener beyond loopback was asked for without a token or TLS, and without
    ``insecure=True``."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine; anything else (names, ``0.0.0.0``, ``""``)
    may be reachable from the network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listens_openly(host: str, security: Security) -> bool:
    """Whether a port on ``host`` with ``security`` would let anyone on the network in."""
    return security.is_open and not is_loopback(host)


def check_listener(host: str, security: Security, insecure: bool = False) -> None:
    """The rule for every listening port: beyond loopback, only with a token or TLS, unless
    the caller says ``insecure=True`` (then a WARNING says so). Raises
    ``InsecureListenerError`` before anything is bound."""
    if not listens_openly(host, security):
        return
    if not insecure:
        raise InsecureListenerError(
            f"refusing to listen on {host!r} without credentials: anyone who can reach it "
            "could run code on this machine. Give security=Security(token=...) or TLS "
            "certificates (LocalCluster does by default: security=True), listen on "
            "127.0.0.1, or pass insecure=True if this network is trusted"
        )
    logger.warning(
        "Listening on %s without a token or TLS (insecure=True): anyone who can reach it can "
        "run code on this machine",
        host,
    )


def check_token(token: object) -> None:
    """Refuse a token that is not a str, is short, or holds control characters (a trailing
    newline or NUL from a file or an environment variable would make it a different secret
    from the one the other machines hold)."""
    if token is None:
        return
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    bad = [c for c in token if unicodedata.category(c) in ("Cc", "Cf", "Cs")]
    if bad:
        raise ValueError(
            f"the auth token contains control characters ({', '.join(map(repr, bad[:3]))}): "
            "strip newlines and NULs from it, e.g. when reading it from a file"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"the auth token has {len(token)} characters; it needs at least "
            f"{MIN_TOKEN_LENGTH}: generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


@dataclass(frozen=True, repr=False)
class Security:
    """Credentials for one side of a connection.

    ``token`` is checked with a challenge-response handshake; with ``tls_ca_file``,
    ``tls_cert`` and ``tls_key`` connections are TLS and both sides verify certificates.
    """

    token: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        tls_parts = (self.tls_ca_file, self.tls_cert, self.tls_key)
        if any(tls_parts) and not all(tls_parts):
            raise ValueError("TLS needs all three of tls_ca_file, tls_cert and tls_key")
        check_token(self.token)

    def __repr__(self) -> str:
        # The token is a secret: a repr ends up in logs and tracebacks, so never show it.
        token = "'***'" if self.token else "None"
        return (
            f"Security(token={token}, tls_ca_file={self.tls_ca_file!r}, "
            f"tls_cert={self.tls_cert!r}, tls_key={self.tls_key!r})"
        )

    @classmethod
    def generate(cls) -> Security:
        """A fresh random token, as LocalCluster uses for itself."""
        return cls(token=secrets.token_urlsafe(32))

    @classmethod
    def from_config(cls, token: str | None = None) -> Security:
        """Explicit token, else ``STORIED_AUTH_TOKEN``, else the config file's."""
        from storied import config

        token = token or os.environ.get("STORIED_AUTH_TOKEN") or config.get("comm.auth-token")
        tls = config.get("comm.tls")
        return cls(
            token=token or None,
            tls_ca_file=tls.get("ca-file"),
            tls_cert=tls.get("cert"),
            tls_key=tls.get("key"),
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca_file is not None

    @property
    def is_open(self) -> bool:
        """True when anyone who can reach the port may connect."""
        return not self.token and not self.uses_tls

    @property
    def scheme(self) -> str:
        return "tls" if self.uses_tls else "tcp"

    def server_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.tls_cert, self.tls_key)  # type: ignore[arg-type]
        return context

    def client_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file)
        context.check_hostname = False  # cluster certificates name roles, not hosts
        context.load_cert_chain(self.tls_cert, self.tls_key)  # type: ignore[arg-type]
        return context
