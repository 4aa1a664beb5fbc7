"""What each page shows, computed from a ``RunHistory`` alone (live or from a ledger)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any

from storied.dashboard.history import RunHistory

#: How many keys a key-prefix search tells the story of, at most.
PREFIX_SEARCH_KEYS = 50
#: The topic the scheduler logs failed tasks under (``action: task-erred``).
ERRED_TOPIC = "erred"

_TUPLE_KEY = re.compile(r"""^\(\s*['"]([^'"]*)['"]""")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")


def key_prefix(key: str) -> str:
    """The name shared by a key's siblings, as Dask's ``key_split``: ``inc-1f2e...`` is
    ``inc``, ``('sum-aggregate-0a1b...', 3)`` is ``sum-aggregate``: the first word, then the
    words made of letters only, up to a token (a word with a digit, or eight hex letters)."""
    match = _TUPLE_KEY.match(key)
    words = (match.group(1) if match else key).split("-")
    kept = [words[0]]
    for word in words[1:]:
        if not word.isalpha() or _HEX8.match(word):
            break
        kept.append(word)
    return "-".join(kept)


async def workers(run: RunHistory) -> list[dict[str, Any]]:
    """Every worker that joined the run, from the ``all`` topic's add/remove events, with its
    live load when there is one."""
    load = await run.workers_now()
    done = Counter(execution["worker"] for execution in await run.executions())
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
        row["executions"] = done.get(address, 0)
    return sorted(rows.values(), key=lambda row: (row["status"] != "running", row["name"]))


async def progress(run: RunHistory) -> list[dict[str, Any]]:
    """Per task prefix: tasks by state, and how many runs finished or failed."""
    by_prefix: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for key, state in (await run.task_states()).items():
        by_prefix[key_prefix(key)][state] += 1
    outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for execution in await run.executions():
        outcomes[key_prefix(execution["key"])][execution["outcome"]] += 1
    return [
        {
            "prefix": prefix,
            "states": dict(by_prefix.get(prefix, {})),
            "tasks": sum(by_prefix.get(prefix, Counter()).values()),
            "executed": outcomes[prefix]["memory"],
            "erred": outcomes[prefix]["erred"],
        }
        for prefix in sorted({*by_prefix, *outcomes})
    ]


async def task_stream(run: RunHistory, limit: int = 2_000) -> list[dict[str, Any]]:
    """The newest ``limit`` task executions, each with its key's prefix, oldest first."""
    executions = sorted(await run.executions(), key=lambda execution: execution["stop"])
    return [
        {**execution, "prefix": key_prefix(execution["key"])}
        for execution in executions[max(len(executions) - limit, 0) :]
    ]


async def story(run: RunHistory, query: str) -> dict[str, Any]:
    """The cluster-wide story of a key, a stimulus id, or every key starting with ``query``
    (at most ``PREFIX_SEARCH_KEYS`` of them), and the failures of the keys it concerns."""
    query = query.strip()
    if not query:
        return {"query": query, "keys": [], "transitions": [], "failures": {}, "truncated": False}
    prefixed = sorted(key for key in await run.keys() if key.startswith(query) and key != query)
    truncated = len(prefixed) > PREFIX_SEARCH_KEYS
    names = [query, *prefixed[:PREFIX_SEARCH_KEYS]]
    transitions = await run.story(names)
    keys = sorted({entry["key"] for entry in transitions})
    return {
        "query": query,
        "keys": keys,
        "transitions": transitions,
        "failures": await failures(run, set(keys)),
        "truncated": truncated,
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
    outcomes = Counter(execution["outcome"] for execution in await run.executions())
    event_counts = await run.event_counts()
    warnings = await run.logs(level=30)
    return {
        **run.info,
        "executions": outcomes["memory"] + outcomes["erred"],
        "erred": outcomes["erred"],
        "events": sum(event_counts.values()),
        "warnings": len(warnings),
        "workers": len(await workers(run)),
    }
