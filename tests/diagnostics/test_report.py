"""``performance_report``: the file's content, and what a person sees when they open it in a
real browser (Debian's Chromium via Playwright) from disk, with the network shut.

Screenshots go to ``.pytest_cache/diagnostics-screenshots/`` (not committed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storied import Client, performance_report
from storied.diagnostics import report as report_module
from storied.diagnostics.report import REPORT_TOPIC, prefix_durations, render
from tests.engine.helpers import fail, inc, poll

SHOTS = Path(__file__).resolve().parents[2] / ".pytest_cache" / "diagnostics-screenshots"
TIMEOUT_MS = 10_000
_DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def report_data(path: Path) -> dict[str, Any]:
    found = _DATA.search(path.read_text(encoding="utf-8"))
    assert found is not None, "the report holds its data"
    return json.loads(found.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, cluster: Any) -> Iterator[Path]:
    """A report of twelve ``inc`` runs and one failure; work before the block is left out."""
    path = tmp_path_factory.mktemp("report") / "dask-report.html"
    with Client(cluster) as client:
        client.gather(client.map(inc, range(700, 705)))
        with performance_report(filename=path):
            client.gather(client.map(inc, range(710, 722)))
            with pytest.raises(ZeroDivisionError):
                client.submit(fail, "</script><b>x</b>").result()
        poll(lambda: client.get_events(REPORT_TOPIC), what="the report's event")
        yield path


def test_the_file_holds_what_ran_inside_the_block(report: Path) -> None:
    data = report_data(report)
    assert len(data["executions"]) == data["executed"] == 13
    assert {row["prefix"]: (row["runs"], row["erred"]) for row in data["prefixes"]} == {
        "inc": (12, 0),
        "fail": (1, 1),
    }
    assert len(data["workers"]) == 2
    assert all(worker["memory"] > 10 * 2**20 for worker in data["workers"])  # an RSS, in bytes
    (failure,) = data["failures"]
    assert failure["exception"].startswith("ZeroDivisionError: cannot handle")
    assert "Traceback (most recent call last)" in failure["traceback"]
    assert "</script><b>x</b>" in failure["exception"]  # kept as text, unharmed
    finishes = [(entry["start"], entry["finish"]) for entry in failure["story"]]
    assert ("processing", "erred") in finishes
    assert {entry["where"] for entry in failure["story"]} > {"scheduler"}  # a worker's part too
    assert "client.map(inc, range(710, 722))" in data["code"]  # the code that ran the block


def test_the_file_needs_nothing_from_outside(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']""", text), "no file or URL is referenced"
    assert "function drawTaskStream" in text  # the dashboard's own drawing code, inlined
    assert text.count("</script>") == 3  # the data's "</script>" did not end its element


def test_writing_it_is_on_the_record(report: Path, client: Client) -> None:
    events = [msg for _, msg in client.get_events(REPORT_TOPIC) if msg["filename"] == str(report)]
    assert events and events[-1]["executions"] == 13 and events[-1]["erred"] == 1


def test_prefix_durations_are_summed_per_prefix() -> None:
    runs = [
        {"key": "inc-1", "start": 0.0, "stop": 1.0, "outcome": "memory"},
        {"key": "inc-2", "start": 0.0, "stop": 3.0, "outcome": "erred"},
        {"key": "('sum-0a1b2c3d', 0)", "start": 1.0, "stop": 1.5, "outcome": "memory"},
    ]
    assert prefix_durations(runs) == [
        {"prefix": "inc", "runs": 2, "erred": 1, "total": 4.0, "mean": 2.0, "longest": 3.0},
        {"prefix": "sum", "runs": 1, "erred": 0, "total": 0.5, "mean": 0.5, "longest": 0.5},
    ]


def test_a_report_of_nothing_renders() -> None:
    empty = {"start": 1.0, "stop": 2.0, "scheduler": "tcp://x:1", "executed": 0, "executions": [],
             "prefixes": [], "workers": [], "failures": []}  # fmt: skip
    assert "<h1>Performance report</h1>" in render(empty)


def test_a_bad_filename_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="filename must be a path"):
        performance_report(filename=3)  # type: ignore[arg-type]


def test_a_person_sees_the_task_stream_and_the_failure(browser: Any, report: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(
        re.compile(r"^(?!file:).*"),
        lambda route: (outside.append(route.request.url), route.abort()),
    )
    try:
        page.goto(report.as_uri())
        page.wait_for_selector("#task-stream svg rect.task")
        assert page.locator("#task-stream rect.task").count() == 13
        assert page.locator("#task-stream rect.erred").count() == 1
        assert page.locator("#prefixes tr").count() == 3  # a header, inc, fail
        failure = page.locator(".failure").inner_text()
        assert "ZeroDivisionError: cannot handle" in failure and "</script><b>x</b>" in failure
        traceback = page.locator(".failure pre.traceback").inner_text()
        assert "Traceback (most recent call last)" in traceback and "in fail" in traceback
        assert "processing → erred" in page.locator(".failure table.story").inner_text()
        assert "MiB" in page.locator("#workers").inner_text()
        assert "performance_report(filename=path)" in page.locator("#code").inner_text()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "performance-report.png"), full_page=True)
    finally:
        page.close()
    assert errors == [], f"the page's script failed: {errors}"
    assert outside == [], f"the report reached outside the file: {outside}"


def test_a_long_run_draws_its_newest_executions_and_counts_all(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_module, "TASK_STREAM_LIMIT", 5)
    with performance_report(tmp_path / "long.html"):
        client.gather(client.map(inc, range(900, 908)))
    data = report_data(tmp_path / "long.html")
    assert data["executed"] == 8 and len(data["executions"]) == 5
    assert sum(row["runs"] for row in data["prefixes"]) == 8
    newest = sorted(entry["startstops"][0]["stop"] for entry in client.get_task_stream(count=8))
    assert sorted(e["stop"] for e in data["executions"]) == newest[-5:]
