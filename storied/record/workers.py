"""What the record says of workers: their names, their removals, the data they fetched.

Read from the events under ``all`` (``add-worker``, ``remove-worker``) and from the workers'
transitions, so the offline CLI can put names beside addresses and mark losses and transfers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from storied.record.events import EventRecord
from storied.record.transitions import TransitionRecord


def worker_names(events: Iterable[EventRecord]) -> dict[str, str]:
    """Address -> name, from the ``add-worker`` and ``remove-worker`` events among ``events``
    (a later run's worker at a reused address wins)."""
    names = {}
    for rec in events:
        msg = rec.msg
        if (
            isinstance(msg, dict)
            and msg.get("action") in ("add-worker", "remove-worker")
            and isinstance(msg.get("worker"), str)
            and msg.get("name") is not None
        ):
            names[msg["worker"]] = str(msg["name"])
    return names


def worker_removals(events: Iterable[EventRecord]) -> list[dict[str, Any]]:
    """The ``remove-worker`` messages among ``events``, each with its ``time``."""
    return [
        {**rec.msg, "time": rec.timestamp}
        for rec in events
        if isinstance(rec.msg, dict) and rec.msg.get("action") == "remove-worker"
    ]


def with_names(address: str, names: dict[str, str]) -> str:
    """``address (name)``, or the address alone where the name is unknown or the same."""
    name = names.get(address)
    return address if name is None or name == address else f"{address} ({name})"


def transfers(records: Iterable[TransitionRecord]) -> list[dict[str, Any]]:
    """Each fetch of a task's data by a worker, from its transitions: ``key``, ``worker`` (the
    receiver), ``start`` (to ``flight``) and ``stop`` (``flight`` to ``memory``)."""
    started: dict[tuple[str, str], float] = {}
    found = []
    for rec in sorted(records, key=lambda r: (r.timestamp, r.seq)):
        if rec.where == "scheduler":
            continue
        if rec.finish == "flight":
            started[(rec.where, rec.key)] = rec.timestamp
        elif rec.start == "flight":
            start = started.pop((rec.where, rec.key), None)
            if start is not None and rec.finish == "memory":
                found.append(
                    {"key": rec.key, "worker": rec.where, "start": start, "stop": rec.timestamp}
                )
    return found
