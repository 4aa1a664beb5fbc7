"""Who may connect: a shared token, TLS with mutual certificate verification, or both."""

from __future__ import annotations

import os
import secrets
import ssl
from dataclasses import dataclass


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
        if self.token is not None and not isinstance(self.token, str):
            raise TypeError(f"token must be a str, not {type(self.token).__name__}")

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
