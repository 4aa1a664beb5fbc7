"""TLS with mutual certificate verification, alone and together with the token."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest

from storied import Client, LocalCluster
from storied.comm import Security
from storied.protocol import handshake
from tests.security.conftest import RawPeer, wait_for


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


@pytest.fixture(scope="module")
def pki(make_ca):
    return make_ca("cluster-ca"), make_ca("stranger-ca")


@pytest.fixture(scope="module")
def tls_cluster(pki) -> Iterator[LocalCluster]:
    ca, _ = pki
    security = ca.security("scheduler", token="tls-and-token-for-tests")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, security=security
    ) as cluster:
        yield cluster


@pytest.fixture
def comm_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level("INFO", logger="storied.comm")
    return caplog


def test_scheduler_workers_and_client_work_over_tls_with_a_token(pki, tls_cluster):
    ca, _ = pki
    assert tls_cluster.scheduler_address.startswith("tls://")
    assert all(w.address.startswith("tls://") for w in tls_cluster.workers.values())
    with Client(
        tls_cluster.scheduler_address,
        security=ca.security("client", token="tls-and-token-for-tests"),
    ) as client:
        # Pairs from both ends of the list make workers fetch each other's results over TLS.
        firsts = client.map(inc, range(100))
        totals = client.map(add, firsts, firsts[::-1])
        assert client.gather(totals) == [101] * 100
        assert client.scheduler_info()["address"] == tls_cluster.scheduler_address


def test_a_certificate_from_another_ca_is_refused(pki, tls_cluster, comm_log):
    ca, stranger_ca = pki
    # Trusts our CA (so it would accept the scheduler) but presents a stranger's certificate.
    stranger = stranger_ca.security("client", token="tls-and-token-for-tests")
    impostor = Security(
        token="tls-and-token-for-tests",
        tls_ca_file=str(ca.cert),
        tls_cert=stranger.tls_cert,
        tls_key=stranger.tls_key,
    )
    before = len(tls_cluster.scheduler.clients)
    with pytest.raises(ConnectionError):
        Client(tls_cluster.scheduler_address, security=impostor, timeout=5)
    wait_for(
        lambda: any("TLS handshake failed" in r.getMessage() for r in comm_log.records),
        what="the scheduler to log the refused certificate",
    )
    # And a client that trusts only the stranger CA will not talk to our scheduler.
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        Client(tls_cluster.scheduler_address, security=stranger, timeout=5)
    assert len(tls_cluster.scheduler.clients) == before


def test_plain_tcp_and_certificate_less_tls_are_refused(pki, tls_cluster, comm_log):
    ca, _ = pki
    address = tls_cluster.scheduler_address.replace("tls://", "tcp://")
    with RawPeer(address) as peer:
        peer.send({"op": "answer"})
        assert peer.closed_by_server()
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.check_hostname = False
    with RawPeer(address) as peer:
        wrapped = context.wrap_socket(peer.sock)
        try:  # TLS 1.3 reports the missing client certificate on the first read
            received = wrapped.recv(1)
        except (ssl.SSLError, ConnectionError):
            received = b""
        assert received == b"", "a client without a certificate got a hello"

    def refusals() -> int:
        return sum("TLS handshake failed" in r.getMessage() for r in comm_log.records)

    # the server logs the second refusal on its own loop, maybe after our socket saw the close
    wait_for(lambda: refusals() >= 2, what="both refusals in the log")


def test_a_valid_certificate_without_the_token_is_refused(pki, tls_cluster, comm_log):
    ca, _ = pki
    with pytest.raises(handshake.AuthenticationError, match="wrong or missing auth token"):
        Client(
            tls_cluster.scheduler_address,
            security=ca.security("client", token="not-the-token-at-all"),
            timeout=5,
        )
    with pytest.raises(handshake.AuthenticationError, match="requires an auth token"):
        Client(tls_cluster.scheduler_address, security=ca.security("client"), timeout=5)
    assert any("wrong or missing auth token" in r.getMessage() for r in comm_log.records)
