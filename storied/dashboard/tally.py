"""Every task of a run counted in one pass, so pages of a million-task run are slices and sums.

A ``TaskTable`` is built from each task's scheduler state and the run's executions; the status,
tasks, runs and story pages then read counts, per-prefix progress, sorted keys and pages of
task rows from it without going over the run again. A finished run's table never changes, so
``LedgerRun`` builds it once (in a thread) and keeps it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from storied.record.keys import key_prefix
from storied.record.summary import BY_OUTCOME, BY_WORKER, PREFIX_RUNS, PREFIX_STATES

#: (key, worker, start, stop, outcome) of one task execution
Execution = tuple[str, str, float, float, str]


def keys_starting_with(
    keys_from_text: Iterable[str], text: str, limit: int
) -> tuple[list[str], bool]:
    """The first ``limit`` of ``keys_from_text`` (keys in order, from the first not below
    ``text``) that start with ``text``, ``text`` itself left out; and whether there are more."""
    found: list[str] = []
    for key in keys_from_text:
        if not key.startswith(text):
            break
        if key == text:
            continue
        if len(found) == limit:
            return found, True
        found.append(key)
    return found, False


class RunCounts:
    """A run's executions counted by worker, outcome and task prefix, and its tasks' states by
    prefix: what the status and runs pages show. Executions are added as they come (a live
    run adds those recorded since its last look); states are set whole."""

    def __init__(self) -> None:
        self.by_worker: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._prefix_runs: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._prefix_states: defaultdict[str, Counter[str]] = defaultdict(Counter)

    @classmethod
    def of_stored(cls, counted: Iterable[tuple[str, str, str, int]]) -> RunCounts:
        """The counts a ledger stored as a run's summary (``storied.record.summary``)."""
        counts = cls()
        for kind, name, detail, count in counted:
            if kind == BY_WORKER:
                counts.by_worker[name] = count
            elif kind == BY_OUTCOME:
                counts.outcomes[name] = count
            elif kind == PREFIX_RUNS:
                counts._prefix_runs[name][detail] = count
            elif kind == PREFIX_STATES:
                counts._prefix_states[name][detail] = count
        return counts

    def add_executions(self, executions: Iterable[Execution]) -> None:
        for key, worker, _, _, outcome in executions:
            self.by_worker[worker] += 1
            self.outcomes[outcome] += 1
            self._prefix_runs[key_prefix(key)][outcome] += 1

    def set_states(self, states: Iterable[tuple[str, str]]) -> None:
        """Each task's state now, as ``(key, state)``."""
        by_prefix: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for key, state in states:
            by_prefix[key_prefix(key)][state] += 1
        self._prefix_states = by_prefix

    def progress(self) -> list[dict[str, Any]]:
        """Per task prefix: tasks by state, and how many runs finished or failed."""
        return [
            {
                "prefix": prefix,
                "states": dict(self._prefix_states.get(prefix, {})),
                "tasks": sum(self._prefix_states.get(prefix, Counter()).values()),
                "executed": self._prefix_runs[prefix]["memory"],
                "erred": self._prefix_runs[prefix]["erred"],
            }
            for prefix in sorted({*self._prefix_states, *self._prefix_runs})
        ]


class TaskPages(Protocol):
    """A run's tasks as the pages ask for them: counted in memory (``TaskTable``) or read
    from a ledger's stored summary (``storied.dashboard.stored.StoredTasks``)."""

    counts: RunCounts

    def __len__(self) -> int: ...

    def starting_with(self, text: str, limit: int) -> tuple[list[str], bool]: ...

    def page(
        self,
        offset: int,
        limit: int,
        prefix: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]: ...


class TaskTable:
    """One row per task (sorted by key) and the run's counts, from states and executions."""

    def __init__(self, states: Mapping[str, str], executions: Iterable[Execution]) -> None:
        executions = list(executions)
        self.counts = RunCounts()
        self.counts.add_executions(executions)
        self.counts.set_states(states.items())
        #: key -> [prefix, state, executed, erred, last worker, last duration]
        rows: dict[str, list[Any]] = {}
        for key, state in states.items():
            rows[key] = [None, state, 0, 0, None, None]
        for key, worker, start, stop, outcome in executions:
            row = rows.get(key)
            if row is None:
                row = rows[key] = [None, None, 0, 0, None, None]
            if outcome == "erred":
                row[3] += 1
            elif outcome == "memory":
                row[2] += 1
            row[4], row[5] = worker, stop - start
        self.keys = sorted(rows)
        self._rows = rows
        #: the keys of each state and of each prefix, in key order: filters read these
        self._of_state: defaultdict[str | None, list[str]] = defaultdict(list)
        self._of_prefix: defaultdict[str, list[str]] = defaultdict(list)
        for key in self.keys:
            row = rows[key]
            row[0] = prefix = key_prefix(key)
            self._of_state[row[1]].append(key)
            self._of_prefix[prefix].append(key)

    def __len__(self) -> int:
        return len(self.keys)

    def starting_with(self, text: str, limit: int) -> tuple[list[str], bool]:
        """The first ``limit`` keys that start with ``text`` (not ``text`` itself), and
        whether there are more."""
        return keys_starting_with(self.keys[bisect_left(self.keys, text) :], text, limit)

    def page(
        self,
        offset: int,
        limit: int,
        prefix: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        """Tasks ``offset`` to ``offset + limit`` in key order, of one task prefix and/or
        state, with how many there are in all."""
        rows = self._rows
        keys: list[str] = self.keys
        if prefix is not None and state is not None:
            keys = [key for key in self._of_prefix.get(prefix, ()) if rows[key][1] == state]
        elif prefix is not None:
            keys = self._of_prefix.get(prefix, [])
        elif state is not None:
            keys = self._of_state.get(state, [])
        return {
            "total": len(keys),
            "offset": offset,
            "limit": limit,
            "tasks": [
                dict(zip(_ROW_FIELDS, (key, *rows[key]), strict=True))
                for key in keys[offset : offset + limit]
            ],
        }


_ROW_FIELDS = ("key", "prefix", "state", "executed", "erred", "worker", "duration")
