"""``storied top``: each worker's resource use over a run, as terminal charts, from a ledger.

Workers sample with every heartbeat and the scheduler logs each sample under the
``worker-metrics`` topic (``storied.scheduler.telemetry``), so this needs only the ledger file.
Every worker's charts share one time axis, the run's, so they line up; a blank means no sample
then (the worker had not joined yet, or was gone).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import click

from storied.record.events import EventRecord
from storied.record.ledger import Ledger
from storied.record.workers import worker_removals
from storied.scheduler.telemetry import METRICS_TOPIC
from storied.worker.memory import format_bytes

#: eight heights; a space is a stretch of time without samples
_BARS = "▁▂▃▄▅▆▇█"
#: columns of one chart: indent and label 16 + chart + figures 18 and 16 make 96 columns
CHART_WIDTH = 46
#: what the rest of the output wraps at
LINE_WIDTH = 100


def _percent(value: float) -> str:
    return f"{value:.0f}%"


def _count(value: float) -> str:
    return f"{value:.0f}"


def _rate(value: float) -> str:
    return f"{format_bytes(value)}/s"


#: (label, sample field, how its values read); ``fetched``/``served`` are derived rates
CHARTS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("cpu", "cpu", _percent),
    ("memory (rss)", "memory", format_bytes),
    ("managed", "managed_bytes", format_bytes),
    ("spilled", "spilled_bytes", format_bytes),
    ("shm", "shm_bytes", format_bytes),
    ("sockets", "sockets", _count),
    ("host net in", "host_read_bps", _rate),
    ("host net out", "host_write_bps", _rate),
    ("fetched", "fetched_bps", _rate),
    ("served", "served_bps", _rate),
)


def _with_transfer_rates(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples with ``fetched_bps`` and ``served_bps``: storied's own transfer counters (totals
    since the worker started) turned into rates since the previous sample."""
    rated = []
    previous: dict[str, Any] | None = None
    for sample in samples:
        rates: dict[str, float | None] = {"fetched_bps": None, "served_bps": None}
        if previous is not None and sample["time"] > previous["time"]:
            elapsed = sample["time"] - previous["time"]
            for rate, total in (
                ("fetched_bps", "transfer_incoming_bytes_total"),
                ("served_bps", "transfer_outgoing_bytes_total"),
            ):
                if sample[total] is not None and previous[total] is not None:
                    rates[rate] = max(sample[total] - previous[total], 0) / elapsed
        rated.append({**sample, **rates})
        previous = sample
    return rated


def sparkline(
    points: Sequence[tuple[float, float]], start: float, end: float, width: int = CHART_WIDTH
) -> str:
    """``points`` (time, value) as ``width`` bars over ``start``..``end``, each the highest
    value in its stretch of time, scaled to the highest of all; blank where none fell."""
    buckets: list[float | None] = [None] * width
    span = max(end - start, 1e-9)
    for when, value in points:
        index = min(max(int((when - start) / span * width), 0), width - 1)
        held = buckets[index]
        buckets[index] = value if held is None else max(held, value)
    top = max((v for v in buckets if v is not None), default=0.0)
    last = len(_BARS) - 1
    return "".join(
        " " if v is None else _BARS[round(v / top * last) if top > 0 else 0] for v in buckets
    )


def worker_samples(records: Iterable[EventRecord]) -> dict[str, dict[str, Any]]:
    """``address -> {"name": ..., "samples": [...]}`` from ``worker-metrics`` events, each
    worker's samples oldest first, with transfer rates."""
    workers: dict[str, dict[str, Any]] = {}
    for rec in records:
        msg = rec.msg
        if not isinstance(msg, dict) or "worker" not in msg:
            continue
        entry = workers.setdefault(msg["worker"], {"name": msg.get("name"), "samples": []})
        entry["samples"].append({k: v for k, v in msg.items() if k not in ("worker", "name")})
    for entry in workers.values():
        entry["samples"] = _with_transfer_rates(sorted(entry["samples"], key=lambda s: s["time"]))
    return workers


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def _departure(removal: dict[str, Any] | None) -> str:
    if removal is None:
        return ""
    return f"; removed at {_clock(removal['time'])}: {removal['cause']}, {removal['reason']}"


def render(
    workers: dict[str, dict[str, Any]],
    removals: dict[str, dict[str, Any]],
    width: int = CHART_WIDTH,
) -> list[str]:
    """The text ``storied top`` prints: a time axis, then a block of charts per worker."""
    times = [s["time"] for entry in workers.values() for s in entry["samples"]]
    start, end = min(times), max(times)
    lines = [
        f"workers: {len(workers)}, from {_clock(start)} to {_clock(end)} ({end - start:.0f} s)",
        "each bar: the highest value in its stretch of time, scaled to its chart's peak",
        f"{'':16}{_clock(start)}{_clock(end):>{width - 8}}",
    ]
    for address, entry in sorted(workers.items(), key=lambda item: str(item[1]["name"])):
        samples = entry["samples"]
        lines.append("")
        lines += textwrap.wrap(
            f"{address} ({entry['name']}): {len(samples)} samples"
            + _departure(removals.get(address)),
            width=LINE_WIDTH,
            subsequent_indent="    ",
        )
        for label, field, show in CHARTS:
            points = [(s["time"], s[field]) for s in samples if s.get(field) is not None]
            if not points:
                continue
            chart = sparkline(points, start, end, width)
            peak = max(value for _, value in points)
            lines.append(
                f"  {label:<14}{chart}  {'last ' + show(points[-1][1]):<18}{'max ' + show(peak)}"
            )
    return lines


@click.command()
@click.option(
    "--ledger",
    "ledger_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="SQLite ledger file written by a scheduler.",
)
@click.option("--run", "run", type=int, help="A run id (default: the latest).")
@click.option("--worker", "wanted", multiple=True, help="Only this worker (address or name).")
@click.option("--json", "as_json", is_flag=True, help="Print each sample as a JSON line.")
def top(ledger_path: str, run: int | None, wanted: tuple[str, ...], as_json: bool) -> None:
    """Chart each worker's CPU, memory, spilled bytes, sockets and bytes moved over a run,
    as sampled with every heartbeat, from the ledger alone."""
    ledger = Ledger(ledger_path)
    if run is None:
        recorded = ledger.runs()
        if not recorded:
            raise click.ClickException(f"{ledger_path} has no runs")
        run = recorded[-1]["run_id"]
    workers = worker_samples(ledger.events(METRICS_TOPIC, run_id=run))
    if wanted:
        workers = {a: e for a, e in workers.items() if a in wanted or str(e["name"]) in wanted}
    if as_json:
        for address, entry in workers.items():
            for sample in entry["samples"]:
                line = {"run_id": run, "worker": address, "name": entry["name"], **sample}
                click.echo(json.dumps(line))
        return
    if not workers:
        raise click.ClickException(
            f"run {run} of {ledger_path} has no worker metrics"
            + (f" for {', '.join(wanted)}" if wanted else "")
            + " (were workers started with worker.telemetry: false?)"
        )
    click.echo(f"run {run} of {ledger_path}")
    removals = worker_removals(ledger.events("all", run_id=run))
    for line in render(workers, {removal["worker"]: removal for removal in removals}):
        click.echo(line)
