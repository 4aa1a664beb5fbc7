"""Where the dashboard listens, and who may read it: open on loopback, the cluster's token or TLS
anywhere else, never code to run."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import logging
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from storied import Client, LocalCluster
from storied.dashboard import parse_dashboard_address
from storied.dashboard.app import COOKIE, SHUTDOWN_TIMEOUT
from tests.dashboard.conftest import get, root
from tests.security.conftest import CertificateAuthority

TOKEN = "dashboard-test-token"


def local(link: str) -> str:
    """The dashboard's root, reached over loopback whatever interface it is bound to."""
    port = urllib.parse.urlsplit(link).port
    return f"{urllib.parse.urlsplit(link).scheme}://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":8787", ("10.0.0.1", 8787)),
        ("127.0.0.2:9000", ("127.0.0.2", 9000)),
        (8787, ("10.0.0.1", 8787)),
        ("[::1]:0", ("::1", 0)),
        (None, None),
    ],
)
def test_dashboard_address_forms(address: object, expected: object) -> None:
    assert parse_dashboard_address(address, "10.0.0.1") == expected


@pytest.mark.parametrize(
    ("address", "error", "says"),
    [
        ("8787x", ValueError, "has no port"),
        (":99999", ValueError, "out of range"),
        (["", 8787], TypeError, "or None for no dashboard"),
        (True, TypeError, "not bool"),
    ],
)
def test_bad_dashboard_address_is_told_at_the_caller(address, error, says) -> None:
    with pytest.raises(error, match=says):
        LocalCluster(n_workers=0, processes=False, dashboard_address=address)


def test_no_dashboard_with_none() -> None:
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert cluster.dashboard_link is None and client.dashboard_link is None
        assert client.scheduler_info()["dashboard"] is None


def test_a_taken_port_falls_back_to_a_free_one(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with LocalCluster(
            n_workers=0, processes=False, dashboard_address=f"127.0.0.1:{port}"
        ) as cluster:
            link = cluster.dashboard_link
            assert urllib.parse.urlsplit(link).port != port
            assert get(link)[0] == 200
    assert f"Port {port} is already in use" in caplog.text


def test_default_is_port_8787_on_the_scheduler_host() -> None:
    """As Dask's LocalCluster: ':8787', or a free port when another cluster holds it."""
    with (
        LocalCluster(n_workers=0, processes=False) as first,
        LocalCluster(n_workers=0, processes=False) as second,
    ):
        ports = {urllib.parse.urlsplit(c.dashboard_link).port for c in (first, second)}
        assert len(ports) == 2
        assert all(c.dashboard_link.startswith("http://127.0.0.1:") for c in (first, second))
        assert all(get(c.dashboard_link)[0] == 200 for c in (first, second))


def test_dashboard_link_has_the_shape_of_dasks() -> None:
    from distributed import LocalCluster as DaskCluster

    shape = re.compile(r"^http://[^/]+:\d+/status$")
    with DaskCluster(n_workers=0, processes=False, dashboard_address=":0") as dask_cluster:
        assert shape.match(dask_cluster.dashboard_link)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        assert shape.match(cluster.dashboard_link)


def test_an_open_cluster_serves_no_dashboard_beyond_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even with ``insecure=True``, which opens the scheduler's port to anyone."""
    with LocalCluster(
        n_workers=0,
        processes=False,
        host="0.0.0.0",
        security=False,
        insecure=True,
        dashboard_address=":0",
    ) as cluster:
        assert cluster.dashboard_link is None
    assert "refusing to serve the dashboard on 0.0.0.0" in caplog.text


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalCluster]:
    """A cluster on every interface, with a token: its dashboard asks for the token."""
    from storied.comm import Security

    with LocalCluster(
        n_workers=0,
        processes=False,
        host="0.0.0.0",
        security=Security(token=TOKEN),
        dashboard_address=":0",
    ) as cluster:
        yield cluster


def test_the_token_guards_api_metrics_and_pages(guarded: LocalCluster) -> None:
    base = local(guarded.dashboard_link)
    for path in ("/api/v1/workers", "/api/v1/tasks", "/metrics"):
        status, body = get(f"{base}{path}")
        assert status == 401 and b"Authorization: Bearer" in body
        assert get(f"{base}{path}", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(f"{base}{path}", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    for pushed in ("/api/v1/status/stream", "/api/v1/events/tail"):
        assert get(f"{base}{pushed}")[0] == 401
    status, body = get(f"{base}/status")  # redirected to the login form
    assert status == 200 and b"needs the cluster's token" in body and b"data-page" not in body


def test_the_login_form_sets_a_cookie_and_wrong_tokens_are_on_the_record(
    guarded: LocalCluster,
) -> None:
    base = local(guarded.dashboard_link)
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    wrong = urllib.parse.urlencode({"token": "guess"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        browser.open(f"{base}/login?next=/logs", data=wrong)
    assert refused.value.code == 401
    right = urllib.parse.urlencode({"token": TOKEN}).encode()
    with browser.open(f"{base}/login?next=/logs", data=right) as response:
        assert response.url.endswith("/logs") and b'data-page="logs"' in response.read()
    cookie = next(c for c in jar if c.name == COOKIE)
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Strict"
    with browser.open(f"{base}/api/v1/workers") as response:
        assert json.loads(response.read()) == []
    actions = [msg["action"] for _, msg in guarded.scheduler.get_events("dashboard")]
    assert actions[:1] == ["dashboard-started"] and {"login", "login-refused"} <= set(actions)


def test_login_never_redirects_off_the_dashboard(guarded: LocalCluster) -> None:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    data = urllib.parse.urlencode({"token": TOKEN}).encode()
    with pytest.raises(urllib.error.HTTPError) as found:
        opener.open(f"{local(guarded.dashboard_link)}/login?next=//evil.example/", data=data)
    assert found.value.code == 302 and found.value.headers["Location"] == "/"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_the_dashboard_is_read_only(guarded: LocalCluster, method: str) -> None:
    for path in ("/api/v1/workers", "/api/v1/story", "/metrics", "/status"):
        request = urllib.request.Request(
            f"{local(guarded.dashboard_link)}{path}",
            data=b"{}",
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405


def test_tls_cluster_serves_https_to_certificate_holders_only(tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    ca = CertificateAuthority.create(tmp_path, "dashboard-ca")
    with LocalCluster(
        n_workers=0,
        processes=False,
        host="0.0.0.0",
        security=ca.security("scheduler"),
        dashboard_address=":0",
    ) as cluster:
        assert cluster.dashboard_link.startswith("https://")
        url = f"{local(cluster.dashboard_link)}/api/v1/workers"
        holder = ca.security("browser").client_context()
        with urllib.request.urlopen(url, context=holder, timeout=10) as response:
            assert json.loads(response.read()) == []
        stranger = ssl.create_default_context(cafile=str(ca.cert))
        stranger.check_hostname = False
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url, context=stranger, timeout=10).read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(url.replace("https", "http"), timeout=10).read()


def test_loopback_dashboard_needs_no_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="storied.scheduler")
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        assert get(f"{root(cluster.dashboard_link)}/api/v1/workers")[0] == 200
    assert f"Dashboard at {cluster.dashboard_link}" in caplog.text


def test_closing_ends_open_event_tails_and_leaves_no_task() -> None:
    """A browser holding an events tail open must not keep anything of the server running,
    on a loop that goes on serving other clusters (as a test session's shared loop does)."""

    async def leftovers() -> list[str]:
        return [repr(t) for t in asyncio.all_tasks() if "aiohttp" in repr(t.get_coro())]

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as keeper:
        cluster = LocalCluster(n_workers=0, processes=False, dashboard_address=":0")
        assert cluster.loop is keeper.loop
        address = urllib.parse.urlsplit(cluster.dashboard_link)
        tail = socket.create_connection((address.hostname, address.port), timeout=10)
        tail.sendall(b"GET /api/v1/events/tail HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tail.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        cluster.close()
        # the tail is ended at once, not waited for (aiohttp alone waits a second, then forces)
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT
        assert asyncio.run_coroutine_threadsafe(leftovers(), keeper.loop).result(10) == []
    while tail.recv(4096):  # until the server's end of the connection is closed
        pass
    tail.close()
