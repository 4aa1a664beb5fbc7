"""Certificates for the TLS tests and raw-socket helpers for talking to a listener as a stranger.

The raw helpers deliberately bypass ``storied.comm.connect``: an attacker does not use our client.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from storied.comm import Security
from storied.comm.core import parse_address
from storied.protocol.frames import FrameDecoder
from storied.protocol.serialize import dumps, loads

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class CertificateAuthority:
    """A throwaway CA (made with the ``openssl`` CLI) that signs certificates for roles."""

    directory: Path
    name: str

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.directory / f"{self.name}.key"

    @classmethod
    def create(cls, directory: Path, name: str) -> CertificateAuthority:
        ca = cls(directory, name)
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            ca.key,
            "-out",
            ca.cert,
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
        )
        return ca

    def security(self, role: str, token: str | None = None) -> Security:
        """A ``Security`` for ``role`` with a fresh certificate signed by this CA."""
        key = self.directory / f"{self.name}-{role}.key"
        cert = self.directory / f"{self.name}-{role}.pem"
        request = self.directory / f"{self.name}-{role}.csr"
        extensions = self.directory / "leaf.ext"
        extensions.write_text(_LEAF_EXTENSIONS)
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            request,
            "-subj",
            f"/CN={role}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            self.cert,
            "-CAkey",
            self.key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            extensions,
        )
        return Security(
            token=token, tls_ca_file=str(self.cert), tls_cert=str(cert), tls_key=str(key)
        )


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def make_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    directory = tmp_path_factory.mktemp("pki")
    return lambda name: CertificateAuthority.create(directory, name)


class RawPeer:
    """A blocking socket speaking our framing by hand, to act as a hostile or replaying peer."""

    def __init__(self, address: str, timeout: float = 5.0) -> None:
        _, host, port = parse_address(address)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.local_port: int = self.sock.getsockname()[1]
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, msg: Any) -> bytes:
        """Send ``msg`` as one frame; returns the exact bytes sent (for replay)."""
        payload = dumps(msg)
        data = struct.pack("!I", len(payload)) + payload
        self.sock.sendall(data)
        return data

    def read(self) -> Any:
        """The next message, or ``EOFError`` once the other side has closed."""
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("closed by the server")
            self.pending.extend(self.decoder.feed(data))
        return loads(self.pending.pop(0))

    def closed_by_server(self, within: float = 5.0) -> bool:
        """Drain until the server closes us; False if it is still open after ``within`` s."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                self.read()
            except EOFError:
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(condition: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)
