"""Do the dashboard's pages of a 1,000,000-task run answer within a second?

Builds a ledger of one finished run of ``--tasks`` tasks through the record's own writer
(``Ledger``: three scheduler transitions, one execution per task, a failure every thousand, events
and log lines), serves it with ``storied dashboard --ledger`` in a process of its own, and
times every page's API call (first call, then the median of ``--repeats``) and, in headless
Chromium, every page until its data is drawn. The server counts a finished run's tasks once, at
start, in a thread; that count is timed too ("counted ahead"), and the calls are made after it.

    .venv/bin/python bench/dashboard_scale.py                     # 1,000,000 tasks
    .venv/bin/python bench/dashboard_scale.py --tasks 100000 --path /tmp/small.db
"""

from __future__ import annotations

import argparse
import json
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

from storied.record.events import pack_msg
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry
from storied.record.transitions import TransitionLog

PREFIXES = ["load", "clean", "inc", "add", "sum-partial", "mean", "fit", "score", "plot", "save"]
WORKERS = [f"tcp://10.0.0.{n}:40000" for n in range(1, 9)]
LIFE = [("released", "waiting"), ("waiting", "processing")]
TOPIC = "bench-progress"


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
        when = now + task * 1e-4
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
            entry = LogRecordEntry(when, "INFO", 20, "storied.worker", f"did {task}", worker)
            ledger.put_log(run_id, entry)
        if task % 20_000 == 19_999:  # this loop records far faster than a scheduler would
            ledger.flush(timeout=600)
    ledger.close()
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


def api_calls(tasks: int) -> dict[str, str]:
    middle = key_of(tasks // 2)
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
    }


def browser_pages(base: str, run: str, tasks: int) -> list[tuple[str, str, str]]:
    middle = key_of(tasks // 2)
    return [
        ("status", f"/status?run={run}", "#task-stream svg rect.task"),
        ("tasks", f"/tasks?run={run}", "#tasks tr:nth-child(101)"),
        ("story", f"/story?run={run}&q={key_of(999)}", ".failure"),
        ("story, prefix", f"/story?run={run}&q={middle[:-2]}", "#story-lanes svg"),
        ("events", f"/events?run={run}", "#events tr:nth-child(201)"),
        ("logs", f"/logs?run={run}", "#logs tr:nth-child(201)"),
        ("runs", "/runs", "#runs tr:nth-child(2)"),
    ]


def time_in_browser(base: str, run: str, tasks: int, repeats: int) -> list[tuple[str, float]]:
    from playwright.sync_api import sync_playwright

    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        for name, path, drawn in browser_pages(base, run, tasks):
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
    started = time.perf_counter()
    process, base = serve(path)
    try:
        # the runs page needs every run's counts: it answers once the count ahead is done
        run = json.loads(urllib.request.urlopen(f"{base}/api/v1/runs").read())["runs"][0]["id"]
        print(f"counted ahead: runs answered {time.perf_counter() - started:.1f} s after start\n")
        print("| API call | first (s) | median (s) | bytes |")
        print("| --- | ---: | ---: | ---: |")
        for name, query in api_calls(args.tasks).items():
            sep = "&" if "?" in query else "?"
            url = f"{base}/api/v1/{query}{sep}run={run}"
            once, size = timed_get(url)
            median = statistics.median(timed_get(url)[0] for _ in range(args.repeats))
            print(f"| {name} | {once:.3f} | {median:.3f} | {size:,} |", flush=True)
        if not args.no_browser:
            print("\n| page in Chromium, until its data is drawn | median (s) |")
            print("| --- | ---: |")
            for name, seconds in time_in_browser(base, run, args.tasks, args.repeats):
                print(f"| {name} | {seconds:.3f} |", flush=True)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
