"""The events and logs of a time window, and the logs of one logger: ``/api/v1/events`` and
``/api/v1/logs`` with ``since``/``until``/``logger``, live and from a ledger after the cluster is
gone, each checked against the same read through the Python API (``client.get_events``, the
ledger reader, the CLI), and bad values told as a JSON 400."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import cloudpickle
import pytest
from click.testing import CliRunner

from storied import Client
from storied.cli import history
from storied.record import Ledger
from tests.dashboard.conftest import (
    after_now,
    cluster_with_ledger,
    get,
    get_json,
    root,
    serving,
    spaced_events,
)
from tests.engine.helpers import poll

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TOPIC = "window-test"
CHILD = "storied.worker.dashtest"  # a child of storied.worker
SIBLING = "storied.workerish"  # shares the text, not the parent


def log_twice(tag: str) -> str:
    """On a worker: a warning from a child of ``storied.worker`` and one from a sibling."""
    logging.getLogger(CHILD).warning("child %s", tag)
    logging.getLogger(SIBLING).warning("sibling %s", tag)
    return tag


@dataclass
class Windowed:
    """Six events of TOPIC, 2 ms apart at least, and warnings logged before, inside and after
    ``[inside_since, inside_until)``."""

    ledger: Path
    events: tuple[tuple[float, Any], ...]  # client.get_events(TOPIC) after they were logged
    inside_since: float
    inside_until: float


def record_window_workload(client: Client, ledger: Path) -> Windowed:
    events = spaced_events(client, TOPIC, 6)
    client.submit(log_twice, "before", pure=False).result()
    after_now()
    inside_since = time.time()
    client.submit(log_twice, "inside", pure=False).result()
    after_now()
    inside_until = time.time()
    client.submit(log_twice, "after", pure=False).result()
    for tag in ("before", "inside", "after"):  # the workers' records reached the scheduler
        poll(lambda tag=tag: api_logs(client, tag), what=f"the {tag} warnings")
    return Windowed(ledger, events, inside_since, inside_until)


def api_logs(client: Client, tag: str) -> bool:
    base = root(client.dashboard_link)
    return any(tag in row["message"] for row in get_json(f"{base}/api/v1/logs?level=WARNING"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Client, Windowed]]:
    ledger = tmp_path_factory.mktemp("window-live") / "history.db"
    with cluster_with_ledger(ledger) as cluster, Client(cluster) as client:
        yield root(cluster.dashboard_link), client, record_window_workload(client, ledger)


@pytest.fixture(scope="module")
def gone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Windowed]]:
    """The same workload on a ledger whose cluster is gone, served by ``storied dashboard``."""
    ledger = tmp_path_factory.mktemp("window-offline") / "history.db"
    with cluster_with_ledger(ledger) as cluster, Client(cluster) as client:
        done = record_window_workload(client, ledger)
    with serving(ledger) as base:
        yield base, done


def url(base: str, endpoint: str, **query: Any) -> str:
    return f"{base}/api/v1/{endpoint}?{urlencode(query)}"


def millis_iso(timestamp: float, zone: str) -> str:
    """``timestamp`` cut to the millisecond (so at or before it), as ISO 8601 in UTC with
    ``zone`` written as given ("" for none: the dashboard reads UTC)."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="milliseconds") + zone


# ------------------------------------------------------------------ events


def test_live_events_of_a_window_are_get_events(live: tuple[str, Client, Windowed]) -> None:
    base, client, done = live
    times = [timestamp for timestamp, _ in done.events]
    since, until = times[1], times[4]
    rows = get_json(url(base, "events", topic=TOPIC, since=since, until=until))
    expected = client.get_events(TOPIC, since=since, until=until)
    assert [(r["timestamp"], r["msg"]) for r in reversed(rows)] == list(expected)
    assert [r["msg"]["n"] for r in rows] == [3, 2, 1]  # newest first; until is not included
    # the same window as ISO 8601, in UTC with or without a zone, or as datetimes in Python
    for zone in ("", "Z", "+00:00"):
        iso = {"since": millis_iso(since, zone), "until": millis_iso(until, zone)}
        assert get_json(url(base, "events", topic=TOPIC, **iso)) == rows
    as_datetimes = client.get_events(
        TOPIC,
        since=datetime.datetime.fromisoformat(millis_iso(since, "Z")),
        until=datetime.datetime.fromisoformat(millis_iso(until, "Z")),
    )
    assert as_datetimes == expected
    # open-ended on either side
    assert [r["msg"]["n"] for r in get_json(url(base, "events", topic=TOPIC, since=since))] == [
        5,
        4,
        3,
        2,
        1,
    ]
    assert [r["msg"]["n"] for r in get_json(url(base, "events", topic=TOPIC, until=since))] == [0]


def test_events_of_a_window_in_pages(live: tuple[str, Client, Windowed]) -> None:
    """Paged below the oldest shown, as without a window; every topic at once too."""
    base, client, done = live
    since, until = done.events[1][0], done.events[5][0]
    window = url(base, "events", topic=TOPIC, since=since, until=until)
    found: list[Any] = []
    page = get_json(f"{window}&limit=1")
    while page:
        found += page
        page = get_json(f"{window}&limit=1&before={page[-1]['seq']}")
    assert [r["msg"]["n"] for r in found] == [4, 3, 2, 1]
    every_topic = get_json(url(base, "events", since=since, until=until, limit=10_000))
    by_python = client.get_events(since=since, until=until)
    assert Counter((r["topic"], r["timestamp"]) for r in every_topic) == Counter(
        (topic, timestamp) for topic, events in by_python.items() for timestamp, _ in events
    )


def read_tail(response: Any) -> dict[str, Any]:
    """The next event a tail sends."""
    while True:
        line = response.readline().decode()
        if line.startswith("data: "):
            return json.loads(line.removeprefix("data: "))


def test_the_tail_keeps_to_its_window(live: tuple[str, Client, Windowed]) -> None:
    """A tail with ``since`` in the future sends nothing logged before it, then what comes."""
    base, client, _ = live
    since = time.time() + 0.3
    with urllib.request.urlopen(url(base, "events/tail", topic=TOPIC, since=since), timeout=10) as (
        response
    ):
        client.log_event(TOPIC, {"tail": "too early"})
        poll(lambda: time.time() > since, what="since has come")
        client.log_event(TOPIC, {"tail": "in the window"})
        arrived = read_tail(response)
    assert arrived["msg"] == {"tail": "in the window"} and arrived["timestamp"] >= since


def test_offline_events_of_a_window_are_the_ledgers(gone: tuple[str, Windowed]) -> None:
    base, done = gone
    ledger = Ledger(done.ledger)
    (run,) = ledger.runs()
    since, until = done.events[1][0], done.events[4][0]
    rows = get_json(url(base, "events", topic=TOPIC, since=since, until=until))
    on_file = ledger.events(TOPIC, since, until, run_id=run["run_id"])
    assert [r["seq"] for r in reversed(rows)] == [e.seq for e in on_file]
    assert [r["msg"] for r in reversed(rows)] == [msg for _, msg in done.events[1:4]]
    iso = {"since": millis_iso(since, "Z"), "until": millis_iso(until, "")}
    assert get_json(url(base, "events", topic=TOPIC, **iso)) == rows


# ------------------------------------------------------------------ logs


def messages(rows: list[dict[str, Any]]) -> list[str]:
    return [row["message"] for row in rows]


def test_live_logs_of_a_logger_are_the_workers_logs(live: tuple[str, Client, Windowed]) -> None:
    """``logger=storied.worker`` is that logger and its children, as ``logging`` nests them:
    ``storied.worker.dashtest``, not ``storied.workerish``; the same records the workers give
    ``client.get_worker_logs``."""
    base, client, _ = live
    rows = get_json(url(base, "logs", level="WARNING", logger="storied.worker", limit=10_000))
    assert {"child before", "child inside", "child after"} <= set(messages(rows))
    assert not any(m.startswith("sibling") for m in messages(rows))
    assert all(
        r["logger"] == "storied.worker" or r["logger"].startswith("storied.worker.") for r in rows
    )
    formatted = [
        line.split(" - ", 3)
        for logs in client.get_worker_logs().values()
        for level, line in logs
        if logging.getLevelName(level) >= logging.WARNING
    ]
    assert Counter((r["logger"], r["message"]) for r in rows) == Counter(
        (name, message)
        for _, name, _, message in formatted
        if name == "storied.worker" or name.startswith("storied.worker.")
    )
    sibling = get_json(url(base, "logs", level="WARNING", logger=SIBLING))
    assert messages(sibling) == ["sibling after", "sibling inside", "sibling before"]


def test_live_logs_of_a_window(live: tuple[str, Client, Windowed]) -> None:
    base, _, done = live
    window = {"since": done.inside_since, "until": done.inside_until}
    rows = get_json(url(base, "logs", level="DEBUG", limit=10_000, **window))
    every = get_json(url(base, "logs", level="DEBUG", limit=10_000))
    assert rows == [r for r in every if done.inside_since <= r["timestamp"] < done.inside_until]
    assert {"child inside", "sibling inside"} <= set(messages(rows))
    assert not {"child before", "child after", "sibling before"} & set(messages(rows))
    one = get_json(url(base, "logs", level="WARNING", logger=CHILD, **window))
    assert messages(one) == ["child inside"]


def test_live_loggers_are_those_that_wrote(live: tuple[str, Client, Windowed]) -> None:
    base, _, _ = live
    written = get_json(url(base, "loggers"))
    assert written[CHILD] == written[SIBLING] == 3
    assert "storied.scheduler" in {name.rsplit(".", 1)[0] for name in written} | set(written)


def test_offline_logs_are_the_ledgers(gone: tuple[str, Windowed]) -> None:
    base, done = gone
    ledger = Ledger(done.ledger)
    (run,) = ledger.runs()
    window = {"since": done.inside_since, "until": done.inside_until}
    for query in (
        {"level": "WARNING", "logger": "storied.worker"},
        {"level": "DEBUG", **window},
        {"level": "WARNING", "logger": CHILD, **window},
    ):
        rows = get_json(url(base, "logs", limit=10_000, **query))
        on_file = ledger.logs(run_id=run["run_id"], **query)  # type: ignore[arg-type]
        assert [(r["timestamp"], r["logger"], r["message"]) for r in reversed(rows)] == [
            (e.timestamp, e.logger, e.message) for e in on_file
        ]
    only = get_json(url(base, "logs", level="WARNING", logger=CHILD, **window))
    assert messages(only) == ["child inside"]
    written = get_json(url(base, "loggers"))
    assert written == dict(Counter(e.logger for e in ledger.logs(run_id=run["run_id"])))


def test_the_cli_reads_the_same_window_and_logger(gone: tuple[str, Windowed]) -> None:
    """``storied logs``/``storied events`` take the same strings as the API (one parser); the
    CLI reads a time without a zone in local time, so here the zone is given."""
    base, done = gone
    since = millis_iso(done.inside_since, "Z")
    until = millis_iso(done.inside_until, "+00:00")
    group = click.Group("storied", commands={c.name: c for c in history.history_commands})

    def cli(*args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(group, [*args, "--ledger", str(done.ledger), "--json"])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    found = cli("logs", "--logger", "storied.worker", "--since", since, "--until", until)
    api = get_json(
        url(base, "logs", level="DEBUG", logger="storied.worker", since=since, until=until)
    )
    assert [r["message"] for r in found] == messages(list(reversed(api))) == ["child inside"]
    times = [timestamp for timestamp, _ in done.events]
    window = ("--since", str(times[1]), "--until", millis_iso(times[4], "Z"))
    assert [r["msg"] for r in cli("events", TOPIC, *window)] == [{"n": 1}, {"n": 2}, {"n": 3}]
    refused = CliRunner().invoke(
        group, ["logs", "--ledger", str(done.ledger), "--since", "9", "--until", "1"]
    )
    assert (
        refused.exit_code == 2 and "--until" in refused.output and "before since" in refused.output
    )


# ------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("events?since=yesterday", "since"),
        ("events?topic=t&since=20&until=10", "until"),
        ("events?until=2026-13-01", "until"),
        ("events/tail?since=soon", "since"),
        ("logs?since=nan", "since"),
        ("logs?since=2026-12-02&until=2026-12-01", "until"),
        ("logs?limit=many", "limit"),
        ("logs?level=LOUD", "level"),
    ],
)
def test_bad_values_are_a_json_400_naming_the_parameter(
    live: tuple[str, Client, Windowed], gone: tuple[str, Windowed], query: str, parameter: str
) -> None:
    for base in (live[0], gone[0]):
        status, body = get(f"{base}/api/v1/{query}")
        assert status == 400, body
        told = json.loads(body)
        assert told["parameter"] == parameter and parameter in told["error"]
        if parameter in ("since", "until"):
            assert "seconds since the epoch" in told["accepted"]
            assert "ISO 8601" in told["accepted"]
    assert live[1].submit(log_twice, "still fine", pure=False).result() == "still fine"
