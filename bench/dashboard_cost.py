"""What a browser on the status page costs map throughput: one warm cluster, watched and not.

One LocalCluster runs map + gather of no-op tasks again and again; between rounds a headless
Chromium (Debian's, driven by Playwright) opens the live status page (which the scheduler then
keeps up to date by server push) or leaves it for about:blank. Rounds go in ABBA order so that
the machine's slow spells fall on both sides; the report is the median of each pair's
throughput ratio (watched / not watched). The goal is a drop of at most 5%.

    .venv/bin/python bench/dashboard_cost.py --tasks 10000 --pairs 8
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request

from pairs import report_pairs
from playwright.sync_api import sync_playwright

from storied import Client, LocalCluster
from storied.dashboard.api import STATUS_INTERVAL


def noop(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--pairs", type=int, default=8, help="rounds watched and not")
    args = parser.parse_args()
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
                page.goto(cl.dashboard_link if watched else "about:blank")
                if watched:
                    page.wait_for_selector("#workers tr:nth-child(3)")
                started = time.perf_counter()
                client.gather(client.map(noop, range(first, first + args.tasks)))
                rates[watched].append(args.tasks / (time.perf_counter() - started))
                first += args.tasks
                if watched:
                    pushes += int(page.evaluate("document.body.dataset.pushes || 0"))
        browser.close()
        held = client.map(noop, range(first, first + args.tasks))
        client.gather(held)
        push = statistics.median(time_status(cl.dashboard_link) for _ in range(9))
        del held
    report_pairs(
        f"{args.pairs} pairs of map({args.tasks:,}) in one warm cluster, ABBA order",
        rates,
        {True: "status page open  ", False: "status page closed"},
    )
    print(f"  pushes the open page received: {pushes}")
    print(
        f"  one push's answer with {args.tasks:,} tasks held, timed over HTTP: {push * 1e3:.1f} ms"
        f" every {STATUS_INTERVAL:.0f} s at most: {push / STATUS_INTERVAL:.1%} of the scheduler's"
        " loop, an upper bound that does not depend on the machine's load as the ratio does"
    )


def time_status(link: str) -> float:
    """Seconds to answer what one push sends (``/api/v1/status``, as the page asks for it)."""
    started = time.perf_counter()
    with urllib.request.urlopen(link.replace("/status", "/api/v1/status?limit=1000")) as answer:
        answer.read()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
