"""One log-level parser for the config, the CLI, the ledger and the dashboard's API."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from storied import config as cfg
from storied.cli import history
from storied.loglevels import ACCEPTED, BadLevel, parse_level
from storied.record import Ledger, Record


@pytest.mark.parametrize(
    ("given", "number"),
    [
        ("WARNING", logging.WARNING),
        ("warning", logging.WARNING),
        (" Info ", logging.INFO),
        ("debug", logging.DEBUG),
        ("25", 25),
        (0, 0),
        (logging.ERROR, logging.ERROR),
    ],
)
def test_names_in_any_case_and_numbers_are_read(given: str | int, number: int) -> None:
    assert parse_level(given) == number


@pytest.mark.parametrize("given", ["LOUD", "", "Level 5", "-10", -10, True, 2.5, None])
def test_anything_else_is_a_bad_level_saying_what_is_accepted(given: object) -> None:
    with pytest.raises(BadLevel, match="unknown log level") as caught:
        parse_level(given)  # type: ignore[arg-type]
    assert ACCEPTED in str(caught.value) and "warning" in ACCEPTED
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do


def test_the_ledger_the_cli_and_the_config_read_levels_alike(tmp_path) -> None:
    path = tmp_path / "ledger.db"
    record = Record(ledger=Ledger(path))
    log = logging.getLogger("storied.test.levels")
    log.addHandler(record.log_handler())
    try:
        log.warning("warned")
        log.error("erred")
    finally:
        log.removeHandler(record.log_handler())
    record.close()
    ledger = Ledger(path)
    by_name = [e.message for e in ledger.logs("error")]
    assert by_name == [e.message for e in ledger.logs("40")] == ["erred"]
    with pytest.raises(BadLevel):
        ledger.logs("LOUD")
    shown = CliRunner().invoke(history.logs, ["--ledger", str(path), "--level", "40", "--json"])
    assert shown.exit_code == 0 and "erred" in shown.output and "warned" not in shown.output
    bad = CliRunner().invoke(history.logs, ["--ledger", str(path), "--level", "LOUD"])
    assert bad.exit_code == 2 and ACCEPTED in bad.output.replace("\n", " ").replace("  ", " ")
    with pytest.raises(ValueError, match=r"logging\.storied: unknown log level 'loud'"):
        cfg.configure_logging({"logging": {"storied": "loud"}})
