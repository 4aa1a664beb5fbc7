"""``storied ledger check|recover PATH``: is a ledger file sound, and save what is left if not."""

from __future__ import annotations

from pathlib import Path

import click

from storied.record.errors import LedgerError
from storied.record.recovery import check, recover


@click.group()
def ledger() -> None:
    """Check a ledger file, or recover what can be read of a damaged one."""


@ledger.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_command(path: Path) -> None:
    """Check every page, index and block of the ledger at PATH (read-only); exit 1 if damaged."""
    problems = check(path)
    if not problems:
        click.echo(f"{path}: ok")
        return
    click.echo(f"{path}: damaged", err=True)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    click.echo(f"`storied ledger recover {path}` copies what can be read to a new file", err=True)
    raise SystemExit(1)


@ledger.command("recover")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new ledger file (default: PATH with .recovered before its suffix).",
)
def recover_command(path: Path, output: Path | None) -> None:
    """Copy every readable row and block of the ledger at PATH into a new file, and say what
    was lost. PATH is only read."""
    target = output or path.with_name(f"{path.stem}.recovered{path.suffix}")
    try:
        recovery = recover(path, target)
    except (LedgerError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    for line in recovery.describe():
        click.echo(line)
    verdict = "nothing was lost" if recovery.complete else "what is listed above was lost"
    click.echo(f"recovered {path} into {target}: {verdict}")
