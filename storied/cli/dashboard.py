"""``storied dashboard``: the dashboard's pages, offline, from ledger files (no cluster)."""

from __future__ import annotations

import threading

import click

from storied.cli.main import _serve
from storied.comm import Security
from storied.dashboard.app import DEFAULT_PORT, Dashboard, DashboardRefused
from storied.dashboard.history import LedgerCatalog
from storied.record.ledgerset import ledger_files


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
        server = Dashboard(catalog, host, port, Security(token=auth_token or None))
    except (FileNotFoundError, DashboardRefused, TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None

    def started(serving: Dashboard) -> None:
        click.echo(f"storied dashboard at {serving.link.removesuffix('/status')}/runs", err=True)
        threading.Thread(target=catalog.count_ahead, name="count-ahead", daemon=True).start()

    _serve(server, started)
