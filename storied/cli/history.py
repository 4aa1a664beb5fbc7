"""History commands: read a ledger file (no cluster needed) or ask a live scheduler.

Each command takes ``--ledger PATH`` or ``--scheduler tcp://HOST:PORT``; both answer through
the same queries, so the output is the same either way. ``--ledger`` may name a directory: every
ledger file in it is read, as a history server would, with runs named ``FILE:ID``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import textwrap
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import click

from storied.loglevels import BadLevel, parse_level
from storied.record.errors import LedgerError
from storied.record.events import EventRecord
from storied.record.failures import explain_story, failure_text
from storied.record.ledger import Ledger
from storied.record.ledgerset import LedgerSet, ledger_files
from storied.record.logcapture import LogRecordEntry, logger_matches
from storied.record.trace import chrome_trace
from storied.record.transitions import TransitionRecord
from storied.record.window import BadTime, parse_window, within
from storied.record.workers import transfers, with_names, worker_names, worker_removals
from storied.scheduler.state import STATES
from storied.scheduler.telemetry import TELEMETRY_TOPICS

FOLLOW_POLL_INTERVAL = 0.5
_TRANSITION_FIELDS = [field.name for field in dataclasses.fields(TransitionRecord)]


class LiveHistory:
    """The ledger's queries, answered by a running scheduler (its in-memory record)."""

    def __init__(self, address: str, token: str | None) -> None:
        from storied.client.client import Client
        from storied.comm import Security

        self.client = Client(address, security=Security.from_config(token), set_as_default=False)

    def close(self) -> None:
        self.client.close()

    def story(self, *keys: str) -> list[TransitionRecord]:
        return [
            TransitionRecord(**{field: entry[field] for field in _TRANSITION_FIELDS})
            for entry in self.client.story(*keys)
        ]

    def events(
        self,
        topic: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        after_seq: int | None = None,
        leave_out: Collection[str] = (),
    ) -> list[EventRecord]:
        found = self.client.get_events(topic, detail=True)
        entries = (
            found
            if topic is not None
            else [e for name, es in found.items() if name not in leave_out for e in es]
        )
        records = sorted((EventRecord(**entry) for entry in entries), key=lambda r: r.seq)
        records = [
            r
            for r in records
            if within(r.timestamp, since, until) and (after_seq is None or r.seq > after_seq)
        ]
        return records[-limit:] if limit else records

    def logs(
        self,
        level: str | None = None,
        where: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        *,
        until: float | None = None,
        logger: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[LogRecordEntry]:
        """As ``Ledger.logs``, from what the scheduler and workers hold in memory."""
        minimum = _level_number(level) if level is not None else 0
        entries = [
            entry
            for entry in (
                LogRecordEntry(*fields)
                for fields in self.client._sync(self.client._request, "log-entries")
            )
            if entry.levelno >= minimum
            and (where is None or entry.where == where)
            and within(entry.timestamp, since, until)
            and (logger is None or logger_matches(entry.logger, logger))
            and (keys is None or entry.key in keys)
        ]
        return entries[-limit:] if limit else entries

    def executions(self, run_id: int | None = None) -> list[dict[str, Any]]:
        return self.client._sync(self.client._request, "executions")

    def runs(self) -> list[dict[str, Any]]:
        raise click.UsageError("runs are kept in a ledger file: pass --ledger PATH")

    def failures(self, keys: Iterable[str], run_id: int | None = None) -> list[dict[str, Any]]:
        """This run's failures of ``keys``, from the scheduler's memory."""
        found = self.client._sync(self.client._request, "failures", keys=list(keys))
        return [{**failure, "run_id": "live"} for failure in found]


def _level_number(level: str) -> int:
    try:
        return parse_level(level)
    except BadLevel as error:
        raise click.BadParameter(str(error), param_hint="--level") from None


def source_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ledger PATH`` or ``--scheduler ADDRESS`` (with ``--auth-token``), one required."""
    func = click.option(
        "--auth-token", envvar="STORIED_AUTH_TOKEN", help="Token of the live scheduler."
    )(func)
    func = click.option(
        "--scheduler", "scheduler_address", help="Ask a running scheduler (tcp://HOST:PORT)."
    )(func)
    return click.option("--ledger", "ledger_path", type=click.Path(exists=True), help=_LEDGER_HELP)(
        func
    )


_LEDGER_HELP = "SQLite ledger file written by a scheduler, or a directory of them."
History = Ledger | LedgerSet | LiveHistory


@contextlib.contextmanager
def open_history(
    ledger_path: str | None, scheduler_address: str | None = None, auth_token: str | None = None
) -> Iterator[History]:
    """The history to ask: a ledger file, every ledger in a directory, or a live scheduler.
    What the ledger cannot answer (damaged, unreadable, no such run) ends the command with
    its reason, not a traceback."""
    if (ledger_path is None) == (scheduler_address is None):
        raise click.UsageError("pass exactly one of --ledger PATH or --scheduler ADDRESS")
    if ledger_path is not None:
        try:
            yield (
                LedgerSet(ledger_files(ledger_path))
                if Path(ledger_path).is_dir()
                else Ledger(ledger_path)
            )
        except (LedgerError, FileNotFoundError) as error:
            raise click.ClickException(str(error)) from None
        except KeyError as error:
            raise click.BadParameter(error.args[0], param_hint="--run") from None
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


def _run_choice(value: str | None) -> int | str | None:
    """``--run``: a run id, ``FILE:ID`` in a directory of ledgers, or ``all`` (the default)
    for every run on file."""
    if value is None or value == "all":
        return None
    if ":" in value:
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a run id nor 'all'") from None


run_option = click.option(
    "--run", "run", default="all", show_default=True, help="Only this run id, or 'all' runs."
)


def _per_run(
    history: History, run: str, query: Callable[..., Sequence[Any]]
) -> list[tuple[int | str, Any]]:
    """``(run id, record)`` for what ``query(run_id=...)`` finds in each run asked for (a live
    scheduler has one run, "live")."""
    if isinstance(history, LiveHistory):
        return [("live", rec) for rec in query()]
    return [(each, rec) for each in _run_ids(history, run) for rec in query(run_id=each)]


def _run_ids(history: Ledger | LedgerSet, run: str) -> list[int | str]:
    """``--run``: the one asked for, or every run on file."""
    run_id = _run_choice(run)
    if isinstance(run_id, str) and isinstance(history, Ledger):
        raise click.BadParameter(
            f"{run!r}: FILE:ID names a run among several ledgers (--ledger DIR); "
            "in one ledger file a run is its number",
            param_hint="--run",
        )
    return [run_id] if run_id is not None else [r["run_id"] for r in history.runs()]


def _in_time_order(history: History) -> bool:
    """Seqs order one file's records; across files only their times do."""
    return isinstance(history, LedgerSet)


def _parse_window(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """``--since``/``--until``: seconds since the epoch or ISO 8601 (local time unless it says
    otherwise, as the commands print times), read as the dashboard's API reads them."""
    try:
        return parse_window(since, until)
    except BadTime as error:
        raise click.BadParameter(str(error), param_hint=f"--{error.parameter}") from None


def _iso(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="milliseconds")


def _json_default(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else repr(value)


def _dumps(value: object) -> str:
    return json.dumps(value, default=_json_default)


def _print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], notes: dict[int, str] | None = None
) -> None:
    """Columns padded to their widest cell; the last column is left unpadded. ``notes`` by row
    index (0: the first row after the header) are printed under their row, indented. Empty
    ``headers``: rows only (a later page of a table)."""
    table = [list(headers), *([str(cell) for cell in row] for row in rows)]
    if not table[0]:
        table.pop(0)
        if not table:
            return
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    for index, row in enumerate(table, start=-1 if headers else 0):
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*padded, row[-1]]).rstrip())
        if notes and index in notes:
            click.echo(textwrap.indent(notes[index], "    "))


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


def _transition_row(rec: TransitionRecord, names: dict[str, str]) -> Sequence[str]:
    recommendations = ", ".join(f"{key}: {state}" for key, state in rec.recommendations.items())
    return (
        _iso(rec.timestamp),
        with_names(rec.where, names),
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
@run_option
@json_option
def story(
    keys: tuple[str, ...],
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    run: str,
    as_json: bool,
) -> None:
    """Show every recorded transition of KEYS (task keys or stimulus ids), across runs, in time
    order (as ``client.story``: workers ship theirs later than they make them). A transition a
    failure caused (to ``erred``, or back to ``released`` for a retry) is followed by the
    exception and its traceback."""
    with open_history(ledger_path, scheduler_address, auth_token) as history:
        found = _per_run(history, run, lambda **kw: history.story(*keys, **kw))
        found.sort(key=lambda pair: (pair[1].timestamp, pair[1].seq))
        entries = [{"run_id": run_id, **rec.as_dict()} for run_id, rec in found]
        keys_found = {entry["key"] for entry in entries}
        explain_story(entries, history.failures(keys_found, run_id=_run_choice(run)))
        task_logs = _per_run(history, run, lambda **kw: history.logs(keys=list(keys), **kw))
        names = worker_names(history.events("all"))
    task_logs.sort(key=lambda pair: pair[1].timestamp)
    if as_json:
        for entry in entries:
            click.echo(_dumps(entry))
        for pair in task_logs:
            click.echo(_dumps(_log_dict(pair)))
        return
    _print_table(
        ("RUN", "TIME", "WHERE", "KEY", "TRANSITION", "STIMULUS", "RECOMMENDATIONS"),
        [(str(run_id), *_transition_row(rec, names)) for run_id, rec in found],
        {i: failure_text(entry["failure"]) for i, entry in enumerate(entries) if entry["failure"]},
    )
    if task_logs:
        click.echo("\nWhat the task logged and printed (worker.capture-task-logs):")
        _print_table(_LOG_HEADERS, [_log_row(pair, names) for pair in task_logs])


def _event_seq_order(pair: tuple[int | str, EventRecord]) -> int:
    return pair[1].seq


def _event_time_order(pair: tuple[int | str, EventRecord]) -> tuple[float, int]:
    return pair[1].timestamp, pair[1].seq


def _newest(pairs: list[tuple[int | str, Any]], limit: int | None) -> list[tuple[int | str, Any]]:
    return pairs if limit is None else pairs[max(len(pairs) - limit, 0) :]


@click.command()
@click.argument("topic", required=False)
@source_options
@run_option
@click.option("--since", help="Only events at or after this time (ISO 8601 or epoch seconds).")
@click.option("--until", help="Only events before this time (ISO 8601 or epoch seconds).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N events.")
@json_option
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--all",
    "every_topic",
    is_flag=True,
    help=f"Without TOPIC, list the telemetry topics too ({', '.join(TELEMETRY_TOPICS)}: a "
    "sample per worker per heartbeat), which are left out otherwise.",
)
def events(
    topic: str | None,
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    run: str,
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
    follow: bool,
    every_topic: bool,
) -> None:
    """Show structured events, of one TOPIC or of all but the telemetry (see --all)."""
    start, end = _parse_window(since, until)
    leave_out = () if topic is not None or every_topic else TELEMETRY_TOPICS

    def show(pairs: list[tuple[int | str, EventRecord]]) -> None:
        _print_records(
            pairs,
            as_json,
            lambda pair: {"run_id": pair[0], **_event_dict(pair[1])},
            ("RUN", *_EVENT_HEADERS),
            lambda pair: (str(pair[0]), *_event_row(pair[1])),
        )

    with open_history(ledger_path, scheduler_address, auth_token) as history:
        found = _per_run(
            history,
            run,
            lambda **kw: history.events(topic, start, end, limit, leave_out=leave_out, **kw),
        )
        order = _event_time_order if _in_time_order(history) else _event_seq_order
        found.sort(key=order)
        # seqs are per file: follow each run of a directory from its own last seq (a run that
        # starts later, from its first); in one file, every run from the newest seq read
        last_seq: dict[int | str, int] = {}
        for run_id, rec in found:
            last_seq[run_id] = max(last_seq.get(run_id, 0), rec.seq)
        newest = 0 if _in_time_order(history) else max(last_seq.values(), default=0)
        show(_newest(found, limit))
        if not follow:
            return
        try:
            while True:
                time.sleep(FOLLOW_POLL_INTERVAL)
                new = _per_run(
                    history,
                    run,
                    lambda **kw: history.events(
                        topic,
                        start,
                        end,
                        after_seq=last_seq.get(kw.get("run_id"), newest),
                        leave_out=leave_out,
                        **kw,
                    ),
                )
                for pair in sorted(new, key=order):
                    row = (
                        _dumps({"run_id": pair[0], **_event_dict(pair[1])})
                        if as_json
                        else "  ".join((str(pair[0]), *_event_row(pair[1])))
                    )
                    click.echo(row)
                    last_seq[pair[0]] = max(last_seq.get(pair[0], 0), pair[1].seq)
        except KeyboardInterrupt:
            pass


@click.command()
@source_options
@run_option
@click.option("--level", help="Minimum level, e.g. WARNING.")
@click.option("--worker", help="Only logs of this worker address ('scheduler' for its own).")
@click.option("--logger", help="Only this logger and its children, e.g. storied.comm.")
@click.option("--key", "keys", multiple=True, help="Only what this task logged (repeatable).")
@click.option("--since", help="Only records at or after this time (ISO 8601 or epoch seconds).")
@click.option("--until", help="Only records before this time (ISO 8601 or epoch seconds).")
@click.option("--limit", type=click.IntRange(min=0), help="Only the newest N records.")
@json_option
def logs(
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    run: str,
    level: str | None,
    worker: str | None,
    logger: str | None,
    keys: tuple[str, ...],
    since: str | None,
    until: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show captured log records of the scheduler and workers (and, with
    worker.capture-task-logs, what tasks logged and printed, with their key)."""
    start, end = _parse_window(since, until)
    if level is not None:
        _level_number(level)  # a bad level is told before any source is opened
    query = {
        "level": level,
        "where": worker,
        "since": start,
        "until": end,
        "logger": logger,
        "keys": list(keys) or None,
    }
    try:
        with open_history(ledger_path, scheduler_address, auth_token) as history:
            names = {} if as_json else worker_names(history.events("all"))
            if isinstance(history, Ledger) and limit is None:
                _print_log_pages(history, run, query, as_json, names)
                return
            entries = _per_run(history, run, lambda **kw: history.logs(limit=limit, **query, **kw))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--level") from None
    entries.sort(key=lambda pair: pair[1].timestamp)
    as_row = partial(_log_row, names=names)
    _print_records(_newest(entries, limit), as_json, _log_dict, _LOG_HEADERS, as_row)


def _print_log_pages(
    ledger: Ledger, run: str, query: dict[str, Any], as_json: bool, names: dict[str, str]
) -> None:
    """Every matching record of a ledger, run after run in the order recorded, printed a page
    at a time so that a ledger of millions of records is never held in memory at once."""
    headers: Sequence[str] = _LOG_HEADERS
    as_row = partial(_log_row, names=names)
    for run_id in _run_ids(ledger, run):
        for page in ledger.log_pages(run_id=run_id, **query):
            _print_records([(run_id, e) for e in page], as_json, _log_dict, headers, as_row)
            headers = ()
    if headers and not as_json:  # nothing found: the header alone, as for other queries
        _print_table(headers, [])


_LOG_HEADERS = ("RUN", "TIME", "LEVEL", "WHERE", "LOGGER", "KEY", "MESSAGE")


def _log_dict(pair: tuple[int | str, LogRecordEntry]) -> dict[str, Any]:
    """The live API's shape (``LogRecordEntry.as_dict``), with the run it belongs to."""
    run_id, entry = pair
    return {"run_id": run_id, **entry.as_dict()}


def _log_row(pair: tuple[int | str, LogRecordEntry], names: dict[str, str]) -> Sequence[str]:
    run_id, entry = pair
    return (
        str(run_id),
        _iso(entry.timestamp),
        entry.level,
        with_names(entry.where, names),
        entry.logger,
        entry.key or "-",
        entry.message,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


ledger_option = click.option(
    "--ledger", "ledger_path", required=True, type=click.Path(exists=True), help=_LEDGER_HELP
)


@click.command()
@ledger_option
@json_option
def runs(ledger_path: str, as_json: bool) -> None:
    """List the runs (scheduler starts) recorded in the ledger, with what each did: tasks run
    on workers, failed attempts, tasks that erred, retries, workers, and duration."""
    with open_history(ledger_path) as history:
        assert not isinstance(history, LiveHistory)
        summaries = history.run_summaries()
    _print_records(
        summaries,
        as_json,
        dict,
        (
            "RUN",
            "STARTED",
            "ENDED",
            "TASKS",
            "FAILURES",
            "ERRED",
            "RETRIED",
            "WORKERS",
            "DURATION",
            "INFO",
        ),
        lambda run: (
            str(run["run_id"]),
            _iso(run["started"]),
            _iso(run["ended"]),
            str(run["tasks"]),
            str(run["failures"]),
            str(run["erred"]),
            str(run["retried"]),
            str(run["workers"]),
            _seconds(run["duration"]),
            _dumps(run["info"]),
        ),
    )


@click.command()
@ledger_option
@run_option
@click.option(
    "--state",
    type=click.Choice(STATES),
    help="Only tasks whose outcome (last state but released and forgotten) is this.",
)
@click.option("--worker", help="Only tasks that ran on this worker address.")
@click.option("--prefix", help="Only keys starting with this.")
@click.option("--since", help="Only tasks with records at or after this time.")
@click.option("--until", help="Only tasks with records before this time.")
@click.option("--failed", is_flag=True, help="Only tasks with a failed attempt or that erred.")
@click.option("--slowest", type=click.IntRange(min=1), help="Only the N longest last executions.")
@json_option
def tasks(
    ledger_path: str,
    run: str,
    state: str | None,
    worker: str | None,
    prefix: str | None,
    since: str | None,
    until: str | None,
    failed: bool,
    slowest: int | None,
    as_json: bool,
) -> None:
    """List tasks, one row per task and run: final state, worker and duration of its last
    execution, executions, failures and the last exception."""
    start, end = _parse_window(since, until)
    with open_history(ledger_path) as history:
        assert not isinstance(history, LiveHistory)
        found = history.tasks(
            run_id=_run_choice(run),  # type: ignore[arg-type]
            state=state,
            worker=worker,
            prefix=prefix,
            since=start,
            until=end,
            failed=failed,
            slowest=slowest,
        )
        names = {} if as_json else worker_names(history.events("all"))
    _print_records(
        found,
        as_json,
        dict,
        ("RUN", "KEY", "STATE", "WORKER", "DURATION", "RUNS", "FAILURES", "EXCEPTION"),
        lambda row: (
            str(row["run_id"]),
            row["key"],
            row["state"] or "-",
            with_names(row["worker"], names) if row["worker"] else "-",
            _seconds(row["duration"]),
            str(row["executions"]),
            str(row["failures"]),
            (row["exception"] or "-")
            + (f" (because {row['blame']} erred)" if row["blame"] else ""),
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
@click.option("--run", "run", help="A run id, or 'all' (default: the latest).")
def timeline(
    ledger_path: str | None,
    scheduler_address: str | None,
    auth_token: str | None,
    output: str,
    run: str | None,
) -> None:
    """Write task executions as a trace for chrome://tracing or ui.perfetto.dev."""
    run_id = _run_choice(run)
    with open_history(ledger_path, scheduler_address, auth_token) as history:
        if not isinstance(history, LiveHistory) and run is None:
            recorded = history.runs()
            if not recorded:
                raise click.ClickException(f"{ledger_path} has no runs")
            run_id = recorded[-1]["run_id"]
        executions = history.executions(run_id)
        if isinstance(history, Ledger):
            events = history.events("all", run_id=run_id)
            fetched = transfers(history.transitions(run_id=run_id))
        else:  # a live scheduler: its workers keep their own transitions, and so the transfers
            events, fetched = history.events("all"), []
    trace = chrome_trace(
        executions,
        names=worker_names(events),
        transfers=fetched,
        removals=worker_removals(events),
    )
    with open(output, "w", encoding="utf-8") as stream:
        json.dump(trace, stream)
    source = (
        scheduler_address
        if ledger_path is None
        else ("every run" if run_id is None else f"run {run_id}")
    )
    click.echo(f"wrote {len(executions)} task executions of {source} to {output}")


history_commands: list[click.Command] = [story, events, logs, runs, tasks, timeline]
