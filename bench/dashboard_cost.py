"""What a browser on a live page costs map throughput: one warm cluster, watched and not.

One LocalCluster runs map + gather of no-op tasks again and again; between rounds a headless
Chromium (Debian's, driven by Playwright) opens a live page (``--page``: status, tasks or
logs, which the scheduler then keeps up to date by server push) or leaves it for
about:blank. Rounds go in ABBA order so that the machine's slow spells fall on both sides; the
report is the median of each pair's throughput ratio (watched / not watched). The goal is a
drop of at most 5%.

    .venv/bin/python bench/dashboard_cost.py --tasks 10000 --pairs 8 --page tasks
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from pairs import report_pairs
from playwright.sync_api import sync_playwright

from storied import Client, LocalCluster
from storied.dashboard.api import RECOUNT_SPACING, STATUS_INTERVAL, TAIL_INTERVAL, TASKS_INTERVAL

#: Per page: what shows it is drawn, the pushes it counts, what one push answers, how often.
PAGES = {
    "status": ("#workers tr:nth-child(3)", "pushes", "status?limit=1000", STATUS_INTERVAL),
    "tasks": ("#tasks tr:nth-child(2)", "taskPushes", "tasks?limit=100", TASKS_INTERVAL),
    "logs": ("#logs tr:nth-child(2)", "logPushes", "logs?level=INFO&limit=200", TAIL_INTERVAL),
}


def noop(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--pairs", type=int, default=8, help="rounds watched and not")
    parser.add_argument("--page", choices=sorted(PAGES), default="status", help="page watched")
    args = parser.parse_args()
    drawn, counter, answer, interval = PAGES[args.page]
    rates: dict[bool, list[float]] = {True: [], False: []}
    pushes = 0
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cl,
        Client(cl) as client,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        client.gather(client.map(noop, range(-8, 0)))
        first = 0
        for pair in range(args.pairs):
            for watched in (True, False) if pair % 2 == 0 else (False, True):
                link = cl.dashboard_link.replace("/status", f"/{args.page}")
                page.goto(link if watched else "about:blank")
                if watched:
                    page.wait_for_selector(drawn)
                started = time.perf_counter()
                client.gather(client.map(noop, range(first, first + args.tasks)))
                rates[watched].append(args.tasks / (time.perf_counter() - started))
                first += args.tasks
                if watched:
                    pushes += int(page.evaluate(f"document.body.dataset.{counter} || 0"))
        browser.close()
        held = client.map(noop, range(first, first + args.tasks))
        client.gather(held)
        timings = []
        for n in range(9):  # after a change each time: a push then answers anew, uncached
            client.submit(noop, -100 - n).result()
            timings.append(time_answer(cl.dashboard_link, answer))
        push = statistics.median(timings)
        del held
    report_pairs(
        f"{args.pairs} pairs of map({args.tasks:,}) in one warm cluster, ABBA order",
        rates,
        {True: f"{args.page} page open  ", False: f"{args.page} page closed"},
    )
    print(f"  pushes the open page received: {pushes}")
    # the tasks push spaces its counts by how long the last took (counted in a thread)
    spacing = max(interval, RECOUNT_SPACING * push) if args.page == "tasks" else interval
    print(
        f"  one push's answer with {args.tasks:,} tasks held, timed over HTTP: {push * 1e3:.1f} ms"
        f" every {spacing:.3g} s at most: {push / spacing:.1%} of the scheduler's process, an"
        " upper bound that does not depend on the machine's load as the ratio does (a logs"
        " tail sends new records only: its bound is that of reading the whole page)"
    )


def time_answer(link: str, path: str) -> float:
    """Seconds to answer what one push sends (``/api/v1/PATH``, as the page asks for it)."""
    started = time.perf_counter()
    with urllib.request.urlopen(link.replace("/status", f"/api/v1/{path}")) as answer:
        answer.read()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
