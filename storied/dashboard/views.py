"""What each page shows, computed from a ``RunHistory`` alone (live or from a ledger)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from storied.dashboard.history import LogFilter, RunHistory
from storied.dashboard.tally import key_prefix

#: How many keys a key-prefix search tells the story of, at most.
PREFIX_SEARCH_KEYS = 50
#: The topic the scheduler logs failed tasks under (``action: task-erred``).
ERRED_TOPIC = "erred"


async def workers(run: RunHistory) -> list[dict[str, Any]]:
    """Every worker that joined the run, from the ``all`` topic's add/remove events, with its
    live load when there is one and the memory and CPU of its newest resource sample (live or
    the last it sent in a finished run)."""
    load = await run.workers_now()
    samples = await run.last_samples()
    done = (await run.counts()).by_worker
    rows: dict[str, dict[str, Any]] = {}
    for event in await run.events("all"):
        msg = event.msg
        if not isinstance(msg, dict) or not isinstance(msg.get("worker"), str):
            continue
        address = msg["worker"]
        if msg.get("action") == "add-worker":
            rows[address] = {
                "address": address,
                "name": msg.get("name", address),
                "nthreads": msg.get("nthreads"),
                "joined": event.timestamp,
                "left": None,
                "reason": None,
            }
        elif msg.get("action") == "remove-worker" and address in rows:
            rows[address].update(left=event.timestamp, reason=msg.get("reason"))
    for address, now in load.items():
        row = rows.setdefault(
            address, {"address": address, "name": now["name"], "joined": None, "left": None}
        )
        row["nthreads"] = now["nthreads"]
    for address, row in rows.items():
        now = load.get(address, {})
        row["status"] = "running" if address in load else ("left" if row["left"] else "unknown")
        row["processing"] = now.get("processing", 0)
        row["in_memory"] = now.get("in_memory", 0)
        sample = samples.get(address, {})
        row["memory"] = sample.get("memory")
        row["shm"] = sample.get("shm_bytes")
        row["cpu"] = sample.get("cpu")
        row["executions"] = done.get(address, 0)
    return sorted(rows.values(), key=lambda row: (row["status"] != "running", row["name"]))


async def progress(run: RunHistory) -> list[dict[str, Any]]:
    """Per task prefix: tasks by state, and how many runs finished or failed."""
    return (await run.counts()).progress()


async def task_stream(run: RunHistory, limit: int = 2_000) -> list[dict[str, Any]]:
    """The newest ``limit`` task executions, each with its key's prefix, oldest first."""
    executions = sorted(await run.executions(limit), key=lambda execution: execution["stop"])
    return [{**execution, "prefix": key_prefix(execution["key"])} for execution in executions]


async def status(run: RunHistory, limit: int = 2_000) -> dict[str, Any]:
    """Everything the status page shows, in one answer (what its live push sends)."""
    return {
        "workers": await workers(run),
        "progress": await progress(run),
        "task_stream": await task_stream(run, limit),
    }


async def story(run: RunHistory, query: str, offset: int = 0, limit: int = 1_000) -> dict[str, Any]:
    """The cluster-wide story of a key, a stimulus id, or every key starting with ``query``
    (at most ``PREFIX_SEARCH_KEYS`` of them): transitions ``offset`` to ``offset + limit`` in
    time order, every failed attempt of the keys it concerns (exception and traceback), and
    the keys and stimuli it links to."""
    query = query.strip()
    if not query:
        return {
            "query": query,
            "keys": [],
            "transitions": [],
            "failures": {},
            "attempts": [],
            "truncated": False,
            "total": 0,
            "offset": offset,
            "limit": limit,
        }
    table = await run.tasks()
    prefixed, truncated = await asyncio.to_thread(table.starting_with, query, PREFIX_SEARCH_KEYS)
    transitions = await run.story([query, *prefixed])
    keys = sorted({entry["key"] for entry in transitions})
    attempts = [
        {**entry.pop("failure"), "transition_seq": entry["seq"]}
        for entry in transitions
        if entry.get("failure")
    ]
    for entry in transitions:
        entry.pop("failure", None)
    return {
        "query": query,
        "keys": keys,
        "transitions": transitions[offset : offset + limit],
        "failures": await failures(run, set(keys)),
        "attempts": attempts,
        "truncated": truncated,
        "total": len(transitions),
        "offset": offset,
        "limit": limit,
    }


async def failures(run: RunHistory, keys: set[str]) -> dict[str, dict[str, Any]]:
    """The newest failure of each of ``keys`` the record holds: exception and traceback."""
    found: dict[str, dict[str, Any]] = {}
    if not keys:
        return found
    for event in await run.events(ERRED_TOPIC):
        msg = event.msg
        if isinstance(msg, dict) and msg.get("key") in keys:
            found[msg["key"]] = {
                "exception": msg.get("exception"),
                "traceback": msg.get("traceback"),
                "worker": msg.get("worker"),
                "timestamp": event.timestamp,
            }
    return found


async def run_summary(run: RunHistory) -> dict[str, Any]:
    """A run's ``info`` and its counts, for the runs page."""
    outcomes = (await run.counts()).outcomes
    event_counts = await run.event_counts()
    warnings = await run.logs(LogFilter(level=logging.WARNING))
    return {
        **run.info,
        "executions": outcomes["memory"] + outcomes["erred"],
        "erred": outcomes["erred"],
        "events": sum(event_counts.values()),
        "warnings": len(warnings),
        "workers": len(await workers(run)),
    }
