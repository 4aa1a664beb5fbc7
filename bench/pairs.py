"""Reporting A/B rounds run in pairs (ABBA order) in one warm cluster, for the A/B benches."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def report_pairs(title: str, rates: dict[bool, list[float]], names: dict[bool, str]) -> float:
    """Print each side's median rate and range and the median of the pairs' ratios (the
    ``True`` side over the ``False`` one), and return that median."""
    ratios = [on / off for on, off in zip(rates[True], rates[False], strict=True)]
    print(title)
    for side in (True, False):
        values = rates[side]
        print(
            f"  {names[side]}: median {statistics.median(values):,.0f} "
            f"tasks/s ({min(values):,.0f}-{max(values):,.0f})"
        )
    median = statistics.median(ratios)
    print(
        f"  {names[True].strip()} / {names[False].strip()}, median of paired ratios: {median:.3f}"
    )
    return median


def report_cpu_pairs(cpu: dict[bool, list[tuple[float, ...]]], parts: Sequence[str]) -> None:
    """For each of ``parts`` (a process or thread, by its index in each round's figures of CPU
    us a task), print each side's median and the median of the pairs' ratios."""
    for part, name in enumerate(parts):
        on = [figures[part] for figures in cpu[True]]
        off = [figures[part] for figures in cpu[False]]
        ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
        print(
            f"  CPU us/task, {name}: queuing {statistics.median(on):.1f}, without "
            f"{statistics.median(off):.1f}; median of paired ratios {ratio:.3f}"
        )
