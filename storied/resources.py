"""Worker resources (``GPU=2``, ``MEM=10e9``): abstract counts a task can claim while it runs.

Workers declare what they have, tasks what they need; the scheduler places a task only on a
worker whose totals suffice, and the worker runs it only while enough is left unclaimed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Resources = dict[str, float]


def parse_resources(value: str | Mapping[str, Any] | None, what: str = "resources") -> Resources:
    """``"GPU=2,MEM=10e9"`` (commas or spaces between items) or a mapping, as name -> amount.

    Raises ``TypeError``/``ValueError`` naming ``what`` and the expected form.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        mapping: dict[str, Any] = {}
        for item in value.replace(",", " ").split():
            name, sep, amount = item.partition("=")
            if not sep or not name:
                raise ValueError(
                    f"{what}: cannot read {item!r}; write NAME=AMOUNT items, e.g. 'GPU=2,MEM=10e9'"
                )
            try:
                mapping[name] = float(amount)
            except ValueError:
                message = f"{what}: amount of {name!r} is not a number: {amount!r}"
                raise ValueError(message) from None
        value = mapping
    return check_resources(value, what)


def check_resources(value: Any, what: str = "resources") -> Resources:
    """A mapping of resource names to finite, non-negative numbers, as ``dict[str, float]``."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{what} must be a dict of resource names to numbers, such as {{'GPU': 1}}, "
            f"not {type(value).__name__}"
        )
    resources: Resources = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what}: resource names must be non-empty str, not {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(
                f"{what}: amount of {name!r} must be a number, not {type(amount).__name__}"
            )
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{what}: amount of {name!r} must be finite and >= 0, not {amount}")
        resources[name] = float(amount)
    return resources


def suffices(supplied: Mapping[str, float], needed: Mapping[str, float]) -> bool:
    """``supplied`` covers every amount in ``needed`` (a resource not supplied counts as 0)."""
    return all(supplied.get(name, 0.0) >= amount for name, amount in needed.items())
