"""Reporting A/B rounds run in pairs (ABBA order) in one warm cluster, for the A/B benches."""

from __future__ import annotations

import statistics


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
