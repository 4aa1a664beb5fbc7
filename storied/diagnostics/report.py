"""``performance_report``: what ran inside a ``with`` block, as one self-contained HTML file.

The file holds its data as JSON and draws it with the dashboard's own chart code
(``storied/dashboard/static/charts.js``), inlined with the dashboard's CSS: it opens from disk
with no server and no network.
"""

from __future__ import annotations

import html
import inspect
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storied.client.events import read_events
from storied.dashboard.pages import STATIC
from storied.dashboard.views import ERRED_TOPIC, key_prefix

if TYPE_CHECKING:
    from storied.client.client import Client

logger = logging.getLogger("storied.client")

#: the topic each written report is logged under (``action: performance-report``)
REPORT_TOPIC = "performance-report"
#: failed tasks whose cluster-wide story a report tells, at most (the rest are listed)
STORIES_PER_REPORT = 20
#: task executions the report's task stream draws, at most: the newest (all are counted)
TASK_STREAM_LIMIT = 20_000


class performance_report:
    """Write an HTML report of what runs inside the block, as Dask's ``performance_report``::

        with performance_report(filename="dask-report.html"):
            x.compute()

    It shows the task stream, durations per task prefix, the workers' memory, and each failed
    task's exception, traceback and cluster-wide story. Writing it is logged under the topic
    ``performance-report``.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str] = "dask-report.html",
        stacklevel: int = 1,
        client: Client | None = None,
    ) -> None:
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"filename must be a path (str), not {type(filename).__name__}")
        if not isinstance(stacklevel, int) or isinstance(stacklevel, bool):
            raise TypeError(f"stacklevel must be an int, not {type(stacklevel).__name__}")
        self.filename = filename
        #: whose code the report shows: 1 is the code holding the ``with`` block, as Dask's
        self._stacklevel = max(stacklevel, 1)
        self._client = client
        self._start = 0.0
        self._since: int | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from storied.client.current import default_client

            self._client = default_client()
        return self._client

    def __enter__(self) -> performance_report:
        self.client._sync(self.__aenter__)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client._sync(self._write, calling_code(self._stacklevel))

    async def __aenter__(self) -> performance_report:
        self._start = time.time()
        self._since = await self.client._request("executions-recorded")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._write(calling_code(self._stacklevel))

    async def _write(self, code: str) -> None:
        data = await collect(self.client, self._since, self._start)
        data["code"] = code
        Path(self.filename).write_text(render(data), encoding="utf-8")
        summary = {
            "action": "performance-report",
            "filename": os.fspath(self.filename),
            "start": data["start"],
            "stop": data["stop"],
            "executions": data["executed"],
            "erred": len(data["failures"]),
        }
        logged = self.client.log_event(REPORT_TOPIC, summary)
        if logged is not None:  # an asynchronous client's
            await logged
        logger.info(
            "Wrote a performance report of %d task executions (%d failed) to %s",
            summary["executions"],
            summary["erred"],
            summary["filename"],
        )


async def collect(client: Client, since: int | None, start: float) -> dict[str, Any]:
    """Everything a report shows, from the scheduler's record and the workers."""
    executions = sorted(
        await client._request("executions", since=since), key=lambda e: e["stop"]
    )  # two workers' reports arrive in any order: newest means latest to stop
    info = await client._request("scheduler-info")
    try:
        memory = await client._run(_process_memory, (), {}, None)
    except Exception as exc:  # a worker leaving now costs the report its memory column only
        logger.warning("A performance report could not ask the workers' memory: %s", exc)
        memory = {}
    erred_keys = [e["key"] for e in executions if e["outcome"] == "erred"]
    failures = await _failures(client, erred_keys)
    return {
        "start": start,
        "stop": time.time(),
        "scheduler": info["address"],
        "executed": len(executions),
        "executions": [
            {**e, "prefix": key_prefix(e["key"])} for e in executions[-TASK_STREAM_LIMIT:]
        ],
        "prefixes": prefix_durations(executions),
        "workers": [
            {
                "address": address,
                "name": worker["name"],
                "nthreads": worker["nthreads"],
                "in_memory": worker.get("in_memory"),
                "memory": memory.get(address),
            }
            for address, worker in sorted(info["workers"].items())
        ],
        "failures": failures,
    }


def prefix_durations(executions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task prefix: runs, failures, and total/mean/longest compute time in seconds."""
    durations: defaultdict[str, list[float]] = defaultdict(list)
    erred: defaultdict[str, int] = defaultdict(int)
    for execution in executions:
        prefix = key_prefix(execution["key"])
        durations[prefix].append(execution["stop"] - execution["start"])
        erred[prefix] += execution["outcome"] == "erred"
    return sorted(
        (
            {
                "prefix": prefix,
                "runs": len(spans),
                "erred": erred[prefix],
                "total": sum(spans),
                "mean": sum(spans) / len(spans),
                "longest": max(spans),
            }
            for prefix, spans in durations.items()
        ),
        key=lambda row: -row["total"],
    )


async def _failures(client: Client, keys: list[str]) -> list[dict[str, Any]]:
    """Each failed key's exception and traceback (the ``erred`` topic) and, for the first
    ``STORIES_PER_REPORT``, its cluster-wide story."""
    if not keys:
        return []
    wanted = dict.fromkeys(keys)
    found: dict[str, dict[str, Any]] = {}
    erred = await read_events(client._request, ERRED_TOPIC, False, None, None, None)
    for timestamp, msg in erred:
        if isinstance(msg, dict) and msg.get("key") in wanted:
            found[msg["key"]] = {
                "key": msg["key"],
                "exception": msg.get("exception"),
                "traceback": msg.get("traceback"),
                "worker": msg.get("worker"),
                "timestamp": timestamp,
            }
    failures = [found.get(key, {"key": key}) for key in wanted]
    for failure in failures[:STORIES_PER_REPORT]:
        story = await client._story([failure["key"]], "ignore", "current")
        failure["story"] = [entry._asdict() for entry in story]
    return failures


def calling_code(stacklevel: int) -> str:
    """The source of the code ``stacklevel`` frames above the caller (what ran the block)."""
    frame = sys._getframe(stacklevel + 1)
    try:
        return inspect.getsource(frame.f_code)
    except (OSError, TypeError):
        return f"<code not available: {frame.f_code.co_filename}, line {frame.f_lineno}>"


def _process_memory() -> int:
    """The worker process's resident memory in bytes (run on each worker)."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def render(data: dict[str, Any]) -> str:
    """The report's HTML: the data as JSON, drawn by the inlined charts script."""
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    return _PAGE.format(
        title=html.escape(f"storied performance report: {time.ctime(data['start'])}"),
        css=(STATIC / "dashboard.css").read_text(encoding="utf-8") + _REPORT_CSS,
        charts=(STATIC / "charts.js").read_text(encoding="utf-8"),
        data=payload,
        script=_REPORT_SCRIPT,
    )


_REPORT_CSS = """
.summary { color: #444; }
.story { font-size: 12px; margin-top: 0.6em; }
.code { background: #fff; border: 1px solid #ddd; padding: 0.6em; max-width: 1100px;
  overflow-x: auto; font-size: 12px; }
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><span class="brand">storied</span><span>performance report</span></header>
<main><h1>Performance report</h1>
<p id="summary" class="summary"></p>
<section><h2>Task stream</h2><div id="task-stream" class="chart"></div></section>
<section><h2>Time per task prefix</h2><table id="prefixes" class="grid"></table></section>
<section><h2>Workers</h2><table id="workers" class="grid"></table></section>
<section><h2>Failures</h2><div id="failures"></div></section>
<section><h2>Calling code</h2><pre id="code" class="code"></pre></section>
</main>
<script type="application/json" id="report-data">{data}</script>
<script>{charts}</script>
<script>{script}</script>
</body></html>
"""

_REPORT_SCRIPT = """
"use strict";
const report = JSON.parse(document.getElementById("report-data").textContent);
const seconds = (s) => (s < 1 ? `${(s * 1000).toFixed(1)} ms` : `${s.toFixed(2)} s`);
const megabytes = (n) => (n == null ? "unknown" : `${(n / 2 ** 20).toFixed(1)} MiB`);
document.getElementById("summary").textContent =
  `${when(report.start)} … ${when(report.stop)} (${seconds(report.stop - report.start)}), ` +
  `scheduler ${report.scheduler}: ${report.executed} task executions, ` +
  `${report.failures.length} failed` +
  (report.executions.length < report.executed
    ? `; the task stream shows the newest ${report.executions.length}.` : ".");
drawTaskStream(document.getElementById("task-stream"), report.executions);
table(document.getElementById("prefixes"),
  ["prefix", "runs", "erred", "total", "mean", "longest"],
  report.prefixes.map((p) => [p.prefix, p.runs, p.erred, seconds(p.total), seconds(p.mean),
    seconds(p.longest)]));
table(document.getElementById("workers"),
  ["name", "address", "threads", "tasks in memory", "process memory"],
  report.workers.map((w) => [w.name, w.address, w.nthreads, w.in_memory, megabytes(w.memory)]));
const failures = document.getElementById("failures");
if (!report.failures.length) failures.append(el("p", { class: "hint" }, "No task failed."));
for (const f of report.failures) {
  const box = drawFailure(f.key, f);
  if (f.story) {
    const story = el("table", { class: "grid story" });
    table(story, ["time", "where", "start → finish", "stimulus"],
      f.story.map((t) => [when(t.timestamp), t.where, `${t.start} → ${t.finish}`, t.stimulus_id]));
    box.append(el("h4", {}, "Cluster-wide story"), story);
  }
  failures.append(box);
}
document.getElementById("code").textContent = report.code || "";
"""
