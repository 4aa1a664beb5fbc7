"""History commands: read a ledger file (no cluster needed) or ask a live scheduler.

Each command takes ``--ledger PATH`` or ``--scheduler tcp://HOST:PORT``; both answer through
the same queries, so the output is the same either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import click

from storied.record.events import EventRecord
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry
from storied.record.trace import chrome_trace
from storied.record.transitions import TransitionRecord

FOLLOW_POLL_INTERVAL = 0.5


class LiveHistory:
    """The ledger's queries, answered by a running scheduler (its in-memory record)."""

    def __init__(self, address: str, token: str | None) -> None:
        from storied.client.client import Client
        from storied.comm import Security

        self.client = Client(address, security=Security.from_config(token), set_as_default=False)

    def close(self) -> None:
        self.client.close()

    def story(self, *keys: str) -> list[TransitionRecord]:
        return [TransitionRecord(**entry.as_dict()) for entry in self.client.story(*keys)]

    def events(
        self,
        topic: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        after_seq: int | None = None,
    ) -> list[EventRecord]:
        found = self.client.get_events(topic, detail=True)
        entries = found if topic is not None else [e for es in found.values() for e in es]
        records = sorted((EventRecord(**entry) for entry in entries), key=lambda r: r.seq)
        records = [
            r
            for r in records
            if (since is None or r.timestamp >= since)
            and (until is None or r.timestamp < until)
            and (after_seq is None or r.seq > after_seq)
        ]
        return records[-limit:] if limit else records

    def logs(
        self, level: str | None = None, where: str | None = None, limit: int | None = None
    ) -> list[LogRecordEntry]:
        minimum = _level_number(level) if level is not None else 0
        entries = [
            LogRecordEntry(*entry)
            for entry in self.client._sync(self.client._request, "log-entries")
            if entry[2] >= minimum and (where is None or entry[5] == where)
        ]
        return entries[-limit:] if limit else entries

    def executions(self, run_id: int | None = None) -> list[dict[str, Any]]:
        return self.client._sync(self.client._request, "executions")

    def runs(self) -> list[dict[str, Any]]:
        raise click.UsageError("runs are kept in a ledger file: pass --ledger PATH")


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise click.BadParameter(f"unknown level {level!r}", param_hint="--level")
    return number


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ledger PATH`` or ``--scheduler ADDRESS`` (with ``--auth-token``), one required."""
    func = click.option(
        "--auth-token", envvar="STORIED_AUTH_TOKEN", help="Token of the live scheduler."
    )(func)
    func = click.option(
        "--scheduler", "scheduler_address", help="Ask a running scheduler (tcp://HOST:PORT)."
    )(func)
    return click.option(
        "--ledger",
        "ledger_path",
        type=click.Path(exists=True, dir_okay=False),
        help="SQLite ledger file written by a scheduler.",
    )(func)


@contextlib.contextmanager
def open_history(
    ledger_path: str | None, scheduler_address: str | None, auth_token: str | None
) -> Iterator[Ledger | LiveHistory]:
    if (ledger_path is None) == (scheduler_address is None):
        raise click.UsageError("pass exactly one of --ledger PATH or --scheduler ADDRESS")
    if ledger_path is not None:
        yield Ledger(ledger_path)
        return
    assert scheduler_address is not None
    try:
        live = LiveHistory(scheduler_address, auth_token)
    except (OSError, TimeoutError, ConnectionError) as error:
        raise click.ClickException(str(error)) from None
    try:
        yield live
    finally:
        live.close()


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
@source_options
@json_option
def story(
    keys: tuple[str, ...],
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    as_json: bool,
) -> None:
    """Show every recorded transition of KEYS (task keys or stimulus ids), across runs, in time
    order (as ``client.story``: workers ship theirs later than they make them)."""
    with open_history(ledger_path, scheduler_address, auth_token) as history:
        records = sorted(history.story(*keys), key=lambda rec: (rec.timestamp, rec.seq))
    _print_records(
        records,
        as_json,
        TransitionRecord.as_dict,
        ("TIME", "WHERE", "KEY", "TRANSITION", "STIMULUS", "RECOMMENDATIONS"),
        _transition_row,
    )


@click.command()
@click.argument("topic", required=False)
@source_options
@click.option("--since", help="Only events at or after this time (ISO 8601 or epoch seconds).")
@click.option("--until", help="Only events before this time (ISO 8601 or epoch seconds).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@json_option
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
def events(
    topic: str | None,
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
    follow: bool,
) -> None:
    """Show structured events, of one TOPIC or of all."""
    with open_history(ledger_path, scheduler_address, auth_token) as history:
        records = history.events(topic, _parse_time(since), _parse_time(until), limit)
        _print_records(records, as_json, _event_dict, _EVENT_HEADERS, _event_row)
        if not follow:
            return
        last_seq = records[-1].seq if records else 0
        try:
            while True:
                time.sleep(FOLLOW_POLL_INTERVAL)
                for rec in history.events(topic, until=_parse_time(until), after_seq=last_seq):
                    row = _dumps(_event_dict(rec)) if as_json else "  ".join(_event_row(rec))
                    click.echo(row)
                    last_seq = rec.seq
        except KeyboardInterrupt:
            pass


@click.command()
@source_options
@click.option("--level", help="Minimum level, e.g. WARNING.")
@click.option("--worker", help="Only logs of this worker address ('scheduler' for its own).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N records.")
@json_option
def logs(
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    level: str | None,
    worker: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show captured log records of the scheduler and workers."""
    try:
        with open_history(ledger_path, scheduler_address, auth_token) as history:
            entries = history.logs(level=level, where=worker, limit=limit)
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
@click.option(
    "--ledger",
    "ledger_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="SQLite ledger file written by a scheduler.",
)
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
@source_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="Where to write the Chrome trace / Perfetto JSON.",
)
@click.option("--run", "run_id", type=int, help="Only this run (default: the latest).")
def timeline(
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    output: str,
    run_id: int | None,
) -> None:
    """Write task executions as a trace for chrome://tracing or ui.perfetto.dev."""
    with open_history(ledger_path, scheduler_address, auth_token) as history:
        if isinstance(history, Ledger) and run_id is None:
            recorded = history.runs()
            if not recorded:
                raise click.ClickException(f"{ledger_path} has no runs")
            run_id = recorded[-1]["run_id"]
        executions = history.executions(run_id)
    with open(output, "w", encoding="utf-8") as stream:
        json.dump(chrome_trace(executions), stream)
    source = f"run {run_id}" if run_id is not None else scheduler_address
    click.echo(f"wrote {len(executions)} task executions of {source} to {output}")


history_commands: list[click.Command] = [story, events, logs, runs, timeline]
