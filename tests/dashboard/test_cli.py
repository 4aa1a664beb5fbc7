"""``storied dashboard`` and ``storied scheduler --dashboard-address``: bad input is told."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from click.testing import CliRunner

from storied.cli.main import cli
from storied.dashboard.history import LedgerCatalog
from storied.record.ledgerset import ledger_files
from tests.dashboard.conftest import Workload


def test_dashboard_needs_a_ledger_that_exists(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--ledger", str(tmp_path / "nope.db")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(cli, ["dashboard", "--ledger", str(tmp_path)])
    assert result.exit_code == 2 and "no ledger files" in result.output


def test_dashboard_beyond_loopback_needs_a_token(finished: Workload) -> None:
    result = CliRunner().invoke(
        cli, ["dashboard", "--ledger", str(finished.ledger), "--host", "0.0.0.0"], env={}
    )
    assert result.exit_code == 2 and "without the cluster's token" in result.output


def test_a_directory_offers_every_run_of_every_file(finished: Workload, tmp_path: Path) -> None:
    shutil.copy(finished.ledger, tmp_path / "a.db")
    shutil.copy(finished.ledger, tmp_path / "b.db")
    (tmp_path / "notes.txt").write_text("not a ledger")
    catalog = LedgerCatalog(ledger_files(tmp_path))
    runs = asyncio.run(catalog.runs())
    assert sorted(run.info["id"] for run in runs) == ["0-1", "0-2", "1-1", "1-2"]
    assert {Path(run.info["ledger"]).name for run in runs} == {"a.db", "b.db"}
    run = asyncio.run(catalog.run("1-1"))
    assert len(asyncio.run(run.executions())) == 23


def test_scheduler_refuses_a_bad_dashboard_address() -> None:
    result = CliRunner().invoke(cli, ["scheduler", "--no-ledger", "--dashboard-address", "x"])
    assert result.exit_code == 2 and "has no port" in result.output
