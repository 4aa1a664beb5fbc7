"""Do the dashboard's pages of a 1,000,000-task run answer within a second?

Builds a ledger of one finished run of ``--tasks`` tasks through the record's own writer
(``Ledger``: three scheduler transitions, one execution per task, a failure every thousand, events
and log lines), serves it with ``storied dashboard --ledger`` in a process of its own, and
times every page's API call and, in headless Chromium, every page until its data is drawn.
Each API call is timed first on a cold server (a process of its own started for it, which has
read nothing yet: the ledger's writer stored the run's summary when the run ended, so nothing
is counted first), then as the median of ``--repeats`` more. The ledger's ``close``, which
stores the summary, is timed too.

    .venv/bin/python bench/dashboard_scale.py                     # 1,000,000 tasks
    .venv/bin/python bench/dashboard_scale.py --tasks 100000 --path /tmp/small.db
"""

from __future__ import annotations

import argparse
import datetime
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from storied.record.events import pack_msg
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry
from storied.record.transitions import TransitionLog

PREFIXES = ["load", "clean", "inc", "add", "sum-partial", "mean", "fit", "score", "plot", "save"]
WORKERS = [f"tcp://10.0.0.{n}:40000" for n in range(1, 9)]
LIFE = [("released", "waiting"), ("waiting", "processing")]
TOPIC = "bench-progress"
#: the loggers of the run's log lines, in turn: the logs page's logger filter keeps a third
LOGGERS = ["storied.worker", "storied.worker.memory", "job"]
#: seconds between two tasks' records
TASK_SPACING = 1e-4
#: the dashboard's id of the one run of the one ledger served
RUN = "0-1"


def key_of(task: int) -> str:
    return f"{PREFIXES[task % len(PREFIXES)]}-{task:032x}"


def build(path: Path, tasks: int) -> float:
    """One run of ``tasks`` tasks, written the way a scheduler's record writes them."""
    ledger = Ledger(path, queue_size=1_000_000)
    run_id = ledger.start_run({"where": "scheduler", "address": "tcp://10.0.0.0:8786"})
    log = TransitionLog(300_000, seq=iter(range(ledger.first_seq(run_id), 2**62)))
    ledger.follow(run_id, log)
    started = time.perf_counter()
    now = time.time()
    seqs = iter(range(10**12, 2**62))  # events' seqs, apart from the transitions'
    for n, worker in enumerate(WORKERS):
        msg = {"action": "add-worker", "worker": worker, "name": str(n), "nthreads": 4}
        ledger.put_event(run_id, "all", (next(seqs), now, pack_msg(msg), "scheduler"))
    for task in range(tasks):
        key, stimulus = key_of(task), f"update-graph-{task // 1000}"
        when = now + task * TASK_SPACING
        worker = WORKERS[task % len(WORKERS)]
        for start, finish in LIFE:
            log.append(key, start, finish, {}, stimulus, timestamp=when)
        erred = task % 1000 == 999
        outcome = "erred" if erred else "memory"
        log.append(key, "processing", outcome, {}, f"task-finished-{task}", worker, when + 1e-3)
        ledger.put_execution(run_id, key, worker, task % 4, when, when + 1e-3, outcome)
        if erred:
            ledger.put_failure(run_id, failure(key, worker, when, task))
        if task % 50 == 0:
            msg = {"done": task}
            ledger.put_event(run_id, TOPIC, (next(seqs), when, pack_msg(msg), worker))
            logger = LOGGERS[task // 50 % len(LOGGERS)]
            entry = LogRecordEntry(when, "INFO", 20, logger, f"did {task}", worker)
            ledger.put_log(run_id, entry)
        if task % 20_000 == 19_999:  # this loop records far faster than a scheduler would
            ledger.flush(timeout=600)
    closing = time.perf_counter()
    ledger.close()
    print(f"close (the run's summary stored): {time.perf_counter() - closing:.1f} s", flush=True)
    assert ledger.dropped == 0, ledger.dropped
    return time.perf_counter() - started


def failure(key: str, worker: str, when: float, task: int) -> dict[str, Any]:
    return {
        "key": key,
        "stimulus_id": f"task-finished-{task}",
        "timestamp": when + 1e-3,
        "outcome": "erred",
        "attempt": 1,
        "worker": worker,
        "start": when,
        "stop": when + 1e-3,
        "exception_type": "ValueError",
        "message": f"task {task} refused",
        "traceback": f'Traceback (most recent call last):\n  File "job.py"\nValueError: {task}',
        "blame": None,
    }


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - started, size


def serve(path: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "storied", "dashboard", "--ledger", str(path), "--port=0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"(http://\S+)/runs", line)
    assert match, line
    return process, match.group(1)


def middle_tenth(started: float, tasks: int) -> str:
    """``since`` and ``until`` of the tenth of the run's time in its middle, as ISO 8601."""
    since, until = (started + tasks * TASK_SPACING * share for share in (0.45, 0.55))
    iso = [datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat() for t in (since, until)]
    return f"since={quote(iso[0])}&until={quote(iso[1])}"


def api_calls(tasks: int, started: float) -> dict[str, str]:
    middle = key_of(tasks // 2)
    window = middle_tenth(started, tasks)
    return {
        "runs": "runs",
        "status (workers, progress, task stream)": "status",
        "tasks, first page": "tasks?limit=100",
        "tasks, page at 90%": f"tasks?limit=100&offset={tasks * 9 // 10}",
        "tasks, erred only": "tasks?state=erred&limit=100",
        "tasks, one prefix, deep page": f"tasks?prefix=inc&offset={tasks // 20}&limit=100",
        "story of a key": f"story?q={middle}",
        "story of a key prefix (50 keys)": f"story?q={middle[:-2]}",
        "story of a stimulus (1000 tasks), first page": f"story?q=update-graph-{tasks // 2000}",
        "topics": "topics",
        "events, newest page": "events?limit=200",
        "events, page below the middle": f"events?limit=200&before={10**12 + tasks // 100}",
        "logs, newest page": "logs?limit=200",
        "logs, page at 90%": f"logs?limit=200&offset={tasks // 50 * 9 // 10}",
        "events of the topic in a window (the middle tenth)": f"events?topic={TOPIC}&{window}",
        "loggers": "loggers",
        "logs of one logger (a third), newest page": "logs?logger=job&limit=200",
        "logs in a window (the middle tenth)": f"logs?limit=200&{window}",
    }


def browser_pages(base: str, run: str, tasks: int, started: float) -> list[tuple[str, str, str]]:
    middle = key_of(tasks // 2)
    window = middle_tenth(started, tasks)
    return [
        ("status", f"/status?run={run}", "#task-stream svg rect.task"),
        ("tasks", f"/tasks?run={run}", "#tasks tr:nth-child(101)"),
        ("story", f"/story?run={run}&q={key_of(999)}", ".failure"),
        ("story, prefix", f"/story?run={run}&q={middle[:-2]}", "#story-lanes svg"),
        ("events", f"/events?run={run}", "#events tr:nth-child(201)"),
        ("logs", f"/logs?run={run}", "#logs tr:nth-child(201)"),
        (
            "events, a window",
            f"/events?run={run}&topic={TOPIC}&{window}",
            "#events tr:nth-child(201)",
        ),
        ("logs, one logger", f"/logs?run={run}&logger=job", "#logs tr:nth-child(201)"),
        ("runs", "/runs", "#runs tr:nth-child(2)"),
    ]


def time_in_browser(
    base: str, run: str, tasks: int, started: float, repeats: int
) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        for name, path, drawn in browser_pages(base, run, tasks, started):
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                page.goto(base + path)
                page.wait_for_selector(drawn)
                timings.append(time.perf_counter() - started)
            found.append((name, statistics.median(timings)))
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--path", type=Path, help="ledger file (kept; built when missing)")
    parser.add_argument("--no-browser", action="store_true", help="time the API calls only")
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp(prefix="storied-dash-")) / "million.db"
    if not path.exists():
        print(f"building a run of {args.tasks:,} tasks in {path}", flush=True)
        print(f"built in {build(path, args.tasks):.0f} s", flush=True)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    print(f"ledger: {size:,.0f} MiB")
    print("| API call | first, cold server (s) | median (s) | bytes |")
    print("| --- | ---: | ---: | ---: |")
    started = Ledger(path).runs()[0]["started"]
    for name, query in api_calls(args.tasks, started).items():
        process, base = serve(path)
        try:
            sep = "&" if "?" in query else "?"
            url = f"{base}/api/v1/{query}{sep}run={RUN}"
            once, size = timed_get(url)
            median = statistics.median(timed_get(url)[0] for _ in range(args.repeats))
            print(f"| {name} | {once:.3f} | {median:.3f} | {size:,} |", flush=True)
        finally:
            stop(process)
    if args.no_browser:
        return
    process, base = serve(path)
    try:
        print("\n| page in Chromium, until its data is drawn | median (s) |")
        print("| --- | ---: |")
        for name, seconds in time_in_browser(base, RUN, args.tasks, started, args.repeats):
            print(f"| {name} | {seconds:.3f} |", flush=True)
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)


if __name__ == "__main__":
    main()
