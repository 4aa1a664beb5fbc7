"""Offline history commands: read a ledger file that no scheduler needs to have open.

The lead adds these to the main ``storied`` group with ``cli.add_command``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import click

from storied.record.events import EventRecord
from storied.record.ledger import Ledger
from storied.record.trace import chrome_trace
from storied.record.transitions import TransitionRecord

FOLLOW_POLL_INTERVAL = 0.5

ledger_option = click.option(
    "--ledger",
    "ledger_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="SQLite ledger file written by a scheduler.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")


def _parse_time(value: str | None) -> float | None:
    """Seconds since the epoch, or an ISO 8601 date/time (local time unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither epoch seconds nor ISO 8601") from None


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="milliseconds")


def _json_default(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _dumps(value: object) -> str:
    return json.dumps(value, default=_json_default)


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last column is left unpadded."""
    table = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(headers))]
    for row in table:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]).rstrip())


def _print_records(
    records: Sequence[Any],
    as_json: bool,
    as_dict: Callable[[Any], dict[str, Any]],
    headers: Sequence[str],
    as_row: Callable[[Any], Sequence[str]],
) -> None:
    if as_json:
        for rec in records:
            click.echo(_dumps(as_dict(rec)))
    else:
        _print_table(headers, [as_row(rec) for rec in records])


def _transition_row(rec: TransitionRecord) -> Sequence[str]:
    recommendations = ", ".join(f"{key}: {state}" for key, state in rec.recommendations.items())
    return (
        _iso(rec.timestamp),
        rec.where,
        rec.key,
        f"{rec.start} -> {rec.finish}",
        rec.stimulus_id,
        recommendations or "-",
    )


def _event_dict(rec: EventRecord) -> dict[str, Any]:
    return {
        "seq": rec.seq,
        "topic": rec.topic,
        "timestamp": rec.timestamp,
        "source": rec.source,
        "msg": rec.msg,
    }


def _event_row(rec: EventRecord) -> Sequence[str]:
    return (_iso(rec.timestamp), rec.topic, rec.source, _dumps(rec.msg))


_EVENT_HEADERS = ("TIME", "TOPIC", "SOURCE", "MESSAGE")


@click.command()
@click.argument("keys", nargs=-1, required=True)
@ledger_option
@json_option
def story(keys: tuple[str, ...], ledger_path: str, as_json: bool) -> None:
    """Show every recorded transition of KEYS (task keys or stimulus ids), across runs."""
    records = Ledger(ledger_path).story(*keys)
    _print_records(
        records,
        as_json,
        TransitionRecord.as_dict,
        ("TIME", "WHERE", "KEY", "TRANSITION", "STIMULUS", "RECOMMENDATIONS"),
        _transition_row,
    )


@click.command()
@click.argument("topic", required=False)
@ledger_option
@click.option("--since", help="Only events at or after this time (ISO 8601 or epoch seconds).")
@click.option("--until", help="Only events before this time (ISO 8601 or epoch seconds).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@json_option
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
def events(
    topic: str | None,
    ledger_path: str,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
    follow: bool,
) -> None:
    """Show structured events, of one TOPIC or of all."""
    ledger = Ledger(ledger_path)
    records = ledger.events(topic, _parse_time(since), _parse_time(until), limit)
    _print_records(records, as_json, _event_dict, _EVENT_HEADERS, _event_row)
    if not follow:
        return
    last_seq = records[-1].seq if records else 0
    try:
        while True:
            time.sleep(FOLLOW_POLL_INTERVAL)
            for rec in ledger.events(topic, until=_parse_time(until), after_seq=last_seq):
                click.echo(_dumps(_event_dict(rec)) if as_json else "  ".join(_event_row(rec)))
                last_seq = rec.seq
    except KeyboardInterrupt:
        pass


@click.command()
@ledger_option
@click.option("--level", help="Minimum level, e.g. WARNING.")
@click.option("--worker", help="Only logs of this worker address ('scheduler' for its own).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N records.")
@json_option
def logs(
    ledger_path: str, level: str | None, worker: str | None, limit: int | None, as_json: bool
) -> None:
    """Show captured log records of the scheduler and workers."""
    try:
        entries = Ledger(ledger_path).logs(level=level, where=worker, limit=limit)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--level") from None
    _print_records(
        entries,
        as_json,
        lambda entry: {
            "timestamp": entry.timestamp,
            "level": entry.level,
            "logger": entry.logger,
            "where": entry.where,
            "message": entry.message,
        },
        ("TIME", "LEVEL", "WHERE", "LOGGER", "MESSAGE"),
        lambda entry: (
            _iso(entry.timestamp),
            entry.level,
            entry.where,
            entry.logger,
            entry.message,
        ),
    )


@click.command()
@ledger_option
@json_option
def runs(ledger_path: str, as_json: bool) -> None:
    """List the runs (scheduler starts) recorded in the ledger."""
    _print_records(
        Ledger(ledger_path).runs(),
        as_json,
        dict,
        ("RUN", "STARTED", "ENDED", "INFO"),
        lambda run: (
            str(run["run_id"]),
            _iso(run["started"]),
            _iso(run["ended"]),
            _dumps(run["info"]),
        ),
    )


@click.command()
@ledger_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="Where to write the Chrome trace / Perfetto JSON.",
)
@click.option("--run", "run_id", type=int, help="Only this run (default: the latest).")
def timeline(ledger_path: str, output: str, run_id: int | None) -> None:
    """Write task executions as a trace for chrome://tracing or ui.perfetto.dev."""
    ledger = Ledger(ledger_path)
    if run_id is None:
        recorded = ledger.runs()
        if not recorded:
            raise click.ClickException(f"{ledger_path} has no runs")
        run_id = recorded[-1]["run_id"]
    executions = ledger.executions(run_id)
    with open(output, "w", encoding="utf-8") as stream:
        json.dump(chrome_trace(executions), stream)
    click.echo(f"wrote {len(executions)} task executions of run {run_id} to {output}")


history_commands: list[click.Command] = [story, events, logs, runs, timeline]
