"""How long does an in-memory story lookup take among 1,000,000 logged transitions?

.venv/bin/python bench/story_lookup.py
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from storied.record.transitions import TransitionLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="transitions to log")
    parser.add_argument("--lookups", type=int, default=10_000)
    args = parser.parse_args()
    log = TransitionLog(args.n)
    tasks = args.n // 4
    started = time.perf_counter()
    for number in range(args.n):
        task, step = divmod(number, 4)
        recommendations = {f"task-{task + 1}": "waiting"} if step == 2 else {}
        log.append(f"task-{task}", "a", "b", recommendations, f"stim-{task}-{step}", timestamp=0.0)
    append_us = (time.perf_counter() - started) / args.n * 1e6
    print(
        f"logged {args.n:,} transitions: {append_us:.2f} us per append (including key formatting)"
    )

    keys = [f"task-{random.randrange(tasks)}" for _ in range(args.lookups)]
    timings = []
    for key in keys:
        started = time.perf_counter()
        story = log.story(key)
        timings.append((time.perf_counter() - started) * 1e6)
        assert story
    timings.sort()
    print(
        f"story(one key) among {len(log):,}: median {statistics.median(timings):.2f} us, "
        f"p99 {timings[int(len(timings) * 0.99) - 1]:.2f} us, max {timings[-1]:.2f} us"
    )


if __name__ == "__main__":
    main()
