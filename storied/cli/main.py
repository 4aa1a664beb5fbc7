"""``storied scheduler``, ``storied worker`` and the history commands."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click

from storied import config
from storied.comm import Security
from storied.comm.security import listens_openly
from storied.loop import new_event_loop
from storied.resources import parse_resources

DEFAULT_LEDGER = Path("~/.local/share/storied/ledger.db")


def _security_options(func: Any) -> Any:
    options = [
        click.option(
            "--auth-token",
            envvar="STORIED_AUTH_TOKEN",
            default=None,
            help="Shared secret; peers must prove they hold it (env STORIED_AUTH_TOKEN).",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Allow listening on a non-loopback address without a token or TLS.",
        ),
        click.option(
            "--tls-ca-file",
            type=click.Path(exists=True, dir_okay=False),
            help="CA certificate that signs every peer's certificate.",
        ),
        click.option(
            "--tls-cert",
            type=click.Path(exists=True, dir_okay=False),
            help="This process's certificate.",
        ),
        click.option(
            "--tls-key",
            type=click.Path(exists=True, dir_okay=False),
            help="This process's private key.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _security(
    host: str,
    insecure: bool,
    auth_token: str | None,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> Security:
    """Credentials from flags, else config; refuse to serve a network port to anyone."""
    tls = config.get("comm.tls")
    try:
        security = Security(
            token=auth_token or config.get("comm.auth-token") or None,
            tls_ca_file=tls_ca_file or tls.get("ca-file"),
            tls_cert=tls_cert or tls.get("cert"),
            tls_key=tls_key or tls.get("key"),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if listens_openly(host, security) and not insecure:
        raise click.UsageError(
            f"refusing to listen on {host} without credentials: anyone who can reach it could "
            "run code on this machine. Pass --auth-token (or STORIED_AUTH_TOKEN) or TLS "
            "options, or --insecure if this network is trusted."
        )
    return security


def _serve(server: Any, on_started: Callable[[Any], None] | None = None) -> None:
    """Run ``server`` until it closes or SIGINT/SIGTERM asks it to, then close it cleanly;
    ``on_started(server)`` once it has started.

    The signal handlers are in place before the server starts: a signal that arrives while it
    starts (a cluster scaling down a worker that has only just joined) closes it as soon as it
    has started, and a second one ends the process at once (Ctrl-C twice on a slow start).
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = False
        stop_requested = False
        closing: list[asyncio.Future[None]] = []

        def on_signal(signum: int) -> None:
            nonlocal stop_requested
            if started:
                closing.append(asyncio.ensure_future(server.close()))
            elif stop_requested:
                os._exit(128 + signum)
            stop_requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        await server.start()
        started = True
        if on_started is not None:
            on_started(server)
        if stop_requested:
            await server.close()
        await server.finished()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="storied")
def cli() -> None:
    """storied: a distributed task scheduler that keeps everything on the record.

    Start a scheduler in one terminal and workers in others (or on other machines), then
    connect with storied.Client("tcp://HOST:PORT"). The history commands read a ledger file,
    with no cluster running.
    """
    config.configure_logging()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8786, show_default=True, type=int, help="Port (0 for any).")
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"SQLite file keeping the whole history [default: {DEFAULT_LEDGER}].",
)
@click.option("--no-ledger", is_flag=True, help="Keep history in memory only.")
@click.option("--retain", default=None, help="Delete ledger records older than this, e.g. 7d.")
@click.option(
    "--dashboard-address",
    default=":8787",
    show_default=True,
    help="Where the dashboard listens (':PORT' binds the scheduler's host); 'none' for none.",
)
@_security_options
def scheduler(
    host: str,
    port: int,
    ledger: str | None,
    no_ledger: bool,
    retain: str | None,
    dashboard_address: str,
    auth_token: str | None,
    insecure: bool,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Start a scheduler."""
    from storied.scheduler.server import Scheduler

    security = _security(host, insecure, auth_token, tls_ca_file, tls_cert, tls_key)
    ledger_path: str | None = None
    if not no_ledger:
        ledger_path = ledger or config.get("scheduler.ledger") or str(DEFAULT_LEDGER.expanduser())
        Path(ledger_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        retain_seconds = config.parse_timedelta(retain) if retain else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retain") from None
    try:
        server = Scheduler(
            host,
            port,
            security=security,
            ledger=ledger_path,
            retain=retain_seconds,
            dashboard_address=None if dashboard_address.lower() == "none" else dashboard_address,
            insecure=insecure,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dashboard-address") from None
    from storied.record.errors import LedgerError

    try:
        _serve(server, _scheduler_started)
    except LedgerError as exc:  # held by another scheduler, damaged, or cannot be written
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.argument("scheduler_address")
@click.option("--nthreads", default=1, show_default=True, type=int, help="Threads running tasks.")
@click.option("--name", default=None, help="Worker name [default: its address].")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on for peers."
)
@click.option("--port", default=0, show_default=True, type=int, help="Port for peers (0: any).")
@click.option(
    "--resources",
    default=None,
    callback=lambda ctx, param, value: _checked_resources(value),
    help='What tasks may claim here, e.g. "GPU=2,MEM=10e9" [default: config worker.resources].',
)
@click.option(
    "--memory-limit",
    default="auto",
    show_default=True,
    help="Bytes of memory per worker ('4GB'), a fraction of system memory ('0.5'), 'auto' "
    "(thread share of system memory) or 0 for no limit; see worker.memory in the config.",
)
@click.option(
    "--local-directory",
    default=None,
    type=click.Path(file_okay=False),
    help="Where the worker keeps spilled data [default: config worker.local-directory, else "
    "the system's temporary folder].",
)
@click.option(
    "--nanny/--no-nanny",
    default=True,
    show_default=True,
    help="Run the worker in a child process of a nanny, which restarts it whenever it dies.",
)
@_security_options
def worker(
    scheduler_address: str,
    nthreads: int,
    name: str | None,
    host: str,
    port: int,
    resources: str | None,
    memory_limit: str,
    local_directory: str | None,
    nanny: bool,
    auth_token: str | None,
    insecure: bool,
    tls_ca_file: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Start a worker connected to SCHEDULER_ADDRESS (tcp://HOST:PORT)."""
    from storied.deploy.local import SILENCE_ENV_VAR
    from storied.nanny import Nanny, WorkerStartError, lifeline
    from storied.worker.memory import parse_memory_limit
    from storied.worker.server import Worker

    lifeline.die_with_parent()
    if os.environ.get(SILENCE_ENV_VAR):
        config.silence_console(int(os.environ[SILENCE_ENV_VAR]))
    security = _security(host, insecure, auth_token, tls_ca_file, tls_cert, tls_key)
    try:
        memory_bytes = parse_memory_limit(memory_limit, nthreads)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--memory-limit") from None
    server: Nanny | Worker
    on_started: Callable[[Any], None] | None = None
    if nanny:
        env = dict(os.environ)
        if security.token:  # in the environment, where ps does not show it
            env["STORIED_AUTH_TOKEN"] = security.token
        params = {**click.get_current_context().params, "memory_limit": memory_bytes or 0}
        command = _supervised_worker_command(params)
        server = Nanny(
            scheduler_address,
            command,
            name=name,
            security=security,
            env=env,
            memory_limit=memory_bytes,
        )
    else:
        supervisor = lifeline.supervising_nanny()
        server = Worker(
            scheduler_address,
            nthreads=nthreads,
            name=name,
            host=host,
            port=port,
            security=security,
            resources=resources,
            nanny=supervisor["id"] if supervisor else None,
            insecure=insecure,
            memory_limit=memory_bytes,
            local_directory=local_directory,
        )
        on_started = partial(_worker_started, supervisor)
    try:
        _serve(server, on_started)
    except (OSError, TimeoutError, ConnectionError, WorkerStartError) as exc:
        click.echo(f"storied worker: {exc}", err=True)
        sys.exit(1)


def _scheduler_started(server: Any) -> None:
    """A scheduler process has started: its start-up objects (its record's rings among them)
    leave garbage collection."""
    from storied.collection import freeze_startup_objects

    freeze_startup_objects(logging.getLogger("storied.scheduler"))


def _worker_started(supervisor: dict[str, Any] | None, server: Any) -> None:
    """A worker process has started and joined: its nanny, if any, hears so, and its
    start-up objects leave garbage collection."""
    from storied.collection import freeze_startup_objects
    from storied.nanny import lifeline

    if supervisor is not None:
        lifeline.report_joined(supervisor, server)
    freeze_startup_objects(logging.getLogger("storied.worker"))


def _checked_resources(value: str | None) -> str | None:
    """``--resources`` is read here too, so a mistake stops ``storied worker`` at once rather
    than the worker process a nanny starts with it."""
    if value is not None:
        try:
            parse_resources(value)
        except (TypeError, ValueError) as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _supervised_worker_command(params: dict[str, Any]) -> list[str]:
    """``storied worker`` with the options this one was given, but ``--no-nanny``: the
    command a nanny runs (the token goes in the environment instead)."""
    command = [sys.executable, "-m", "storied", "worker", params["scheduler_address"]]
    command.append("--no-nanny")
    for name, value in params.items():
        flag = "--" + name.replace("_", "-")
        if name in ("scheduler_address", "nanny", "auth_token") or value is None or value is False:
            continue
        command += [flag] if value is True else [flag, str(value)]
    return command


def _add_history_commands() -> None:
    try:
        from storied.cli.history import history_commands
    except ImportError:
        return
    for command in history_commands:
        cli.add_command(command)
    from storied.cli.dashboard import dashboard
    from storied.cli.ledger import ledger
    from storied.cli.top import top

    cli.add_command(dashboard)
    cli.add_command(ledger)
    cli.add_command(top)


_add_history_commands()
