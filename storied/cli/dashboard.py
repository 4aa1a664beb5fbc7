"""``storied dashboard``: the dashboard's pages, offline, from ledger files (no cluster)."""

from __future__ import annotations

import asyncio
import signal

import click

from storied.comm import Security
from storied.dashboard.app import DEFAULT_PORT, Dashboard, DashboardRefused
from storied.dashboard.history import LedgerCatalog, ledger_files
from storied.loop import new_event_loop


@click.command()
@click.option(
    "--ledger",
    "ledger_path",
    required=True,
    type=click.Path(exists=True),
    help="A ledger file, or a directory of them (*.db, *.sqlite, *.ledger): every run of each.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (taken: any free)."
)
@click.option(
    "--auth-token",
    envvar="STORIED_AUTH_TOKEN",
    default=None,
    help="Token a browser must give when serving beyond loopback (env STORIED_AUTH_TOKEN).",
)
def dashboard(ledger_path: str, host: str, port: int, auth_token: str | None) -> None:
    """Serve the dashboard for every run kept in ledger files, until Ctrl-C."""
    try:
        catalog = LedgerCatalog(ledger_files(ledger_path))
        server = Dashboard(catalog, host, port, Security(token=auth_token))
    except (FileNotFoundError, DashboardRefused) as exc:
        raise click.UsageError(str(exc)) from None

    async def main() -> None:
        await server.start()
        click.echo(f"storied dashboard at {server.link.removesuffix('/status')}/runs", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
