"""The dashboard's HTTP server: aiohttp on the caller's event loop, read-only, guarded.

Bound on loopback it is open, as Dask's dashboard is. Anywhere else it serves only with the
cluster's credentials: with a token, every request must carry it (``Authorization: Bearer``
or the cookie the login form sets); with TLS, it speaks HTTPS and asks for a certificate signed
by the cluster's CA. With neither it refuses to start. See docs/security.md.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import html
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from storied.comm import Security
from storied.comm.security import is_loopback
from storied.dashboard import api, pages
from storied.dashboard.history import Catalog, LiveCatalog
from storied.dashboard.metrics import exposition, scheduler_registry

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.dashboard")

DEFAULT_PORT = 8787
COOKIE = "storied-dashboard-token"
#: The topic the dashboard logs what it does under (start, logins) via the scheduler.
EVENT_TOPIC = "dashboard"
#: How long open event tails get to end when the server closes.
SHUTDOWN_TIMEOUT = 0.5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardRefused(ValueError):
    """The dashboard would serve beyond loopback without the cluster's credentials."""


def parse_dashboard_address(address: Any, default_host: str) -> tuple[str, int] | None:
    """``(host, port)`` from Dask's forms: ``":8787"``, ``"host:8787"``, ``8787`` or None (off).

    An empty host means the scheduler's own host: the dashboard binds where the scheduler does.
    """
    if address is None:
        return None
    if isinstance(address, bool) or not isinstance(address, int | str):
        raise TypeError(
            "dashboard_address is ':PORT', 'HOST:PORT', a port number, or None for no "
            f"dashboard, not {type(address).__name__}"
        )
    host, _, port = str(address).rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(
            f"dashboard_address {address!r} has no port: write ':8787' or 'HOST:8787'"
        ) from None
    if not 0 <= number < 65536:
        raise ValueError(f"dashboard_address {address!r}: port {number} is out of range")
    return (host.strip("[]") or default_host, number)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``port``, or on a free port when that one is taken (as Dask)."""
    try:
        return socket.create_server((host, port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
    sock = socket.create_server((host, 0))
    logger.warning(
        "Port %d is already in use; the dashboard is on port %d instead",
        port,
        sock.getsockname()[1],
    )
    return sock


class Dashboard:
    """Pages, ``/api/v1`` and ``/metrics`` over a ``Catalog``, served on the running loop."""

    def __init__(
        self,
        catalog: Catalog,
        host: str,
        port: int,
        security: Security,
        *,
        metrics: Callable[[], bytes] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_record(msg)`` puts what the dashboard does on the record (an event)."""
        guarded = not is_loopback(host)
        if guarded and security.is_open:
            raise DashboardRefused(
                f"refusing to serve the dashboard on {host} without the cluster's token or "
                "TLS: bind it to loopback (dashboard_address='127.0.0.1:8787') or give the "
                "cluster credentials"
            )
        self.catalog = catalog
        self.host = host
        self.port = port
        self.token = security.token if guarded else None
        self.ssl_context = security.server_context() if guarded else None
        self._metrics = metrics
        self._on_record = on_record or (lambda msg: None)
        self._runner: web.AppRunner | None = None
        self._closed = asyncio.Event()
        self._tails: set[asyncio.Task[Any]] = set()

    @property
    def link(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/status"

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app[api.CATALOG] = self.catalog
        app[api.TAILS] = self._tails
        app.add_routes([*pages.routes(), *api.routes()])
        app.add_routes([web.get("/login", self._login_form), web.post("/login", self._login)])
        if self._metrics is not None:
            app.add_routes([web.get("/metrics", self._serve_metrics)])
        return app

    async def start(self) -> Dashboard:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(
            self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()
        self._on_record({"action": "dashboard-started", "link": self.link})
        return self

    async def close(self) -> None:
        """Ends the open events tails, then the server: nothing of it is left running."""
        tails = list(self._tails)
        for tail in tails:
            tail.cancel()
        await asyncio.gather(*tails, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._closed.set()

    async def finished(self) -> None:
        """Returns once the dashboard is closed (as a scheduler's ``finished``)."""
        await self._closed.wait()

    # ------------------------------------------------------------------ access

    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        offered = header[len("Bearer ") :] if header.startswith("Bearer ") else None
        offered = offered or request.cookies.get(COOKIE)
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" or request.path.startswith("/static/"):
            return await handler(request)
        if self._authorized(request):
            return await handler(request)
        if request.path.startswith(api.API_PREFIX) or request.path == "/metrics":
            raise web.HTTPUnauthorized(
                text="send the cluster's token: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise web.HTTPFound(f"/login?next={request.path_qs}")

    async def _login_form(self, request: web.Request) -> web.Response:
        target = html.escape(_local_path(request.query.get("next", "/")))
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><title>storied: log in</title>"
                '<link rel="stylesheet" href="/static/dashboard.css"><main>'
                "<h1>storied dashboard</h1><p>This dashboard needs the cluster's token.</p>"
                f'<form method="post" action="/login?next={target}">'
                '<input type="password" name="token" placeholder="token" size="50"> '
                '<button type="submit">Log in</button></form></main>'
            ),
        )

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        offered = str(form.get("token", ""))
        peer = request.remote or "?"
        if self.token is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
            logger.warning("Dashboard login refused from %s", peer)
            self._on_record({"action": "login-refused", "peer": peer})
            raise web.HTTPUnauthorized(text="wrong token")
        logger.info("Dashboard login from %s", peer)
        self._on_record({"action": "login", "peer": peer})
        response = web.HTTPFound(_local_path(request.query.get("next", "/")))
        response.set_cookie(
            COOKIE,
            self.token,
            httponly=True,
            samesite="Strict",
            secure=self.ssl_context is not None,
        )
        raise response

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.Response(
            body=self._metrics(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


def _local_path(target: str) -> str:
    """Only a path on this server may follow a login (no open redirect elsewhere)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def serve_scheduler(scheduler: Scheduler, address: tuple[str, int]) -> Dashboard | None:
    """Start the live dashboard of ``scheduler`` at ``address``; None (logged) if refused."""
    host, port = address
    registry = scheduler_registry(scheduler)
    try:
        dashboard = Dashboard(
            LiveCatalog(scheduler),
            host,
            port,
            scheduler.security,
            metrics=lambda: exposition(registry),
            on_record=lambda msg: scheduler.log_event(EVENT_TOPIC, msg),
        )
    except DashboardRefused as exc:
        logger.warning("No dashboard: %s", exc)
        return None
    return await dashboard.start()
