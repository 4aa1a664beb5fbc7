"""A finished run's tasks read from the summary its ledger stored, a page at a time.

The same questions as a ``TaskTable`` (counts, a page of tasks, keys by prefix), answered by
indexed SQL over ``run_tasks`` and ``run_counts`` (``storied.record.summary``), so a run of a
million tasks needs no count first.
"""

from __future__ import annotations

from typing import Any

from storied.dashboard.tally import RunCounts, keys_starting_with
from storied.record.ledger import Ledger
from storied.record.summary import TASKS


class StoredTasks:
    """The tasks of run ``run_id`` of ``ledger``, from its stored summary (``counted``: the
    ``run_counts`` rows ``Ledger.task_counts`` gave)."""

    def __init__(
        self, ledger: Ledger, run_id: int, counted: list[tuple[str, str, str, int]]
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.counts = RunCounts.of_stored(counted)
        self._total = sum(count for kind, _, _, count in counted if kind == TASKS)

    def __len__(self) -> int:
        return self._total

    def starting_with(self, text: str, limit: int) -> tuple[list[str], bool]:
        """The first ``limit`` keys that start with ``text`` (not ``text`` itself), and
        whether there are more."""
        keys = self.ledger.task_keys_from(self.run_id, text, limit + 2)
        return keys_starting_with(keys, text, limit)

    def page(
        self,
        offset: int,
        limit: int,
        prefix: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        """Tasks ``offset`` to ``offset + limit`` in key order, of one task prefix and/or
        state, with how many there are in all."""
        total, tasks = self.ledger.task_page(self.run_id, offset, limit, prefix, state)
        return {"total": total, "offset": offset, "limit": limit, "tasks": tasks}
