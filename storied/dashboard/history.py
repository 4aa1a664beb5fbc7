"""The one query interface the dashboard reads, answered live or from ledger files.

As in Spark's UI and history server, the pages never ask a scheduler or a file directly: they
read a ``RunHistory`` (one run's record) picked from a ``Catalog`` (the runs on offer). A
running scheduler answers with ``LiveRun``; a ledger file, long after, with ``LedgerRun``. Both
return the same plain records, so live and after-the-fact pages cannot drift apart.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from storied.record.events import EventRecord
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

#: The id of the one run a live scheduler offers.
LIVE_RUN = "live"


class RunHistory(Protocol):
    """One run's record: what every page of the dashboard is built from."""

    #: ``id``, ``live``, ``started``, ``ended`` and what the run recorded about itself
    info: dict[str, Any]

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        """Live load by worker address (``nthreads``, ``processing``, ``in_memory``); a run
        read from a ledger has none."""
        ...

    async def task_states(self) -> dict[str, str]:
        """Each task's state on the scheduler, now (live) or when the run was last recorded."""
        ...

    async def executions(self) -> list[dict[str, Any]]:
        """Task runs on worker threads: ``key, worker, thread, start, stop, outcome``."""
        ...

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        """Cluster-wide transitions of keys or stimulus ids (``TransitionRecord.as_dict``),
        in time order."""
        ...

    async def keys(self) -> set[str]:
        """Task keys the run knows of, for searches by key prefix."""
        ...

    async def event_counts(self) -> dict[str, int]: ...

    async def events(
        self, topic: str | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> list[EventRecord]:
        """Events oldest first; ``after_seq`` for tails, ``limit`` keeps the newest."""
        ...

    async def logs(self, level: int = 0, limit: int | None = None) -> list[LogRecordEntry]:
        """Log records of the scheduler and workers at ``level`` and above, oldest first."""
        ...


class Catalog(Protocol):
    """The runs a dashboard offers: one live run, or every run of some ledger files."""

    live: bool

    async def runs(self) -> list[RunHistory]:
        """Every run on offer, oldest first."""
        ...

    async def run(self, run_id: str | None) -> RunHistory:
        """The run by id (None: the newest); ``KeyError`` when there is none such."""
        ...


def _newest(records: list[Any], limit: int | None) -> list[Any]:
    return records if limit is None else records[max(len(records) - limit, 0) :]


class LiveRun:
    """A running scheduler's record and state, read on its event loop.

    Its record also answers from earlier runs on the same ledger file; the dashboard shows
    this run alone (as it does a run read from a ledger), so it keeps seqs from
    ``Record.first_seq`` on.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.info = {"id": LIVE_RUN, "live": True, "address": scheduler.address, "ended": None}

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        return {
            address: worker.identity() for address, worker in self.scheduler.state.workers.items()
        }

    async def task_states(self) -> dict[str, str]:
        return {key: ts.state for key, ts in self.scheduler.state.tasks.items()}

    async def executions(self) -> list[dict[str, Any]]:
        return self.scheduler.record.executions()

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        first = self.scheduler.record.first_seq
        entries = await self.scheduler._cluster_story(names, on_error="ignore")
        return [entry for entry in entries if entry["seq"] >= first]

    async def keys(self) -> set[str]:
        known = set(self.scheduler.state.tasks)
        known.update(execution["key"] for execution in self.scheduler.record.executions())
        return known

    async def event_counts(self) -> dict[str, int]:
        return self.scheduler.record.event_counts()

    async def events(
        self, topic: str | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> list[EventRecord]:
        record = self.scheduler.record
        if after_seq is not None:  # a tail: new events are in memory, the ledger is not read
            return _newest(record.events_after(after_seq, topic), limit)
        found = await self.scheduler._off_loop(record.events, topic, detail=True)
        records = found if topic is not None else [r for rs in found.values() for r in rs]
        this_run = [r for r in records if r.seq >= record.first_seq]
        return _newest(sorted(this_run, key=_by_seq), limit)

    async def logs(self, level: int = 0, limit: int | None = None) -> list[LogRecordEntry]:
        entries = await self.scheduler._log_entries()
        return _newest([LogRecordEntry(*e) for e in entries if e[2] >= level], limit)


def _by_seq(record: EventRecord) -> int:
    return record.seq


class LedgerRun:
    """One run on a ledger file; every read runs in a thread, off the serving loop."""

    def __init__(self, ledger: Ledger, run_id: int, info: dict[str, Any]) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.info = info

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        return {}

    async def task_states(self) -> dict[str, str]:
        def final_states() -> dict[str, str]:
            records = self.ledger.transitions(run_id=self.run_id, where="scheduler")
            return {rec.key: rec.finish for rec in records}

        return await asyncio.to_thread(final_states)

    async def executions(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.ledger.executions, self.run_id)

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        records = await asyncio.to_thread(self.ledger.story, *names, run_id=self.run_id)
        return sorted((rec.as_dict() for rec in records), key=lambda entry: entry["timestamp"])

    async def keys(self) -> set[str]:
        def logged_keys() -> set[str]:
            return {rec.key for rec in self.ledger.transitions(run_id=self.run_id)}

        return await asyncio.to_thread(logged_keys)

    async def event_counts(self) -> dict[str, int]:
        return dict(Counter(rec.topic for rec in await self.events()))

    async def events(
        self, topic: str | None = None, after_seq: int | None = None, limit: int | None = None
    ) -> list[EventRecord]:
        return await asyncio.to_thread(
            self.ledger.events, topic, limit=limit, run_id=self.run_id, after_seq=after_seq
        )

    async def logs(self, level: int = 0, limit: int | None = None) -> list[LogRecordEntry]:
        return await asyncio.to_thread(
            self.ledger.logs, level or None, limit=limit, run_id=self.run_id
        )


class LiveCatalog:
    """A running scheduler offers one run: itself."""

    live = True

    def __init__(self, scheduler: Scheduler) -> None:
        self._run = LiveRun(scheduler)

    async def runs(self) -> list[RunHistory]:
        return [self._run]

    async def run(self, run_id: str | None) -> RunHistory:
        if run_id not in (None, "", LIVE_RUN):
            raise KeyError(f"a live dashboard has one run, {LIVE_RUN!r}, not {run_id!r}")
        return self._run


class LedgerCatalog:
    """Every run of every ledger file given: Spark's history server, for storied."""

    live = False

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.ledgers = [Ledger(path) for path in paths]

    async def runs(self) -> list[RunHistory]:
        return await asyncio.to_thread(self._read_runs)

    def _read_runs(self) -> list[RunHistory]:
        """Read afresh at every call: a scheduler may be adding runs to a file meanwhile."""
        runs: list[RunHistory] = []
        for index, ledger in enumerate(self.ledgers):
            for run in ledger.runs():
                info = {
                    **run["info"],
                    "id": f"{index}-{run['run_id']}",
                    "live": False,
                    "ledger": str(ledger.path),
                    "run_id": run["run_id"],
                    "started": run["started"],
                    "ended": run["ended"],
                }
                runs.append(LedgerRun(ledger, run["run_id"], info))
        runs.sort(key=lambda run: run.info["started"])
        return runs

    async def run(self, run_id: str | None) -> RunHistory:
        runs = await self.runs()
        if not runs:
            raise KeyError("the ledgers hold no runs yet")
        if not run_id:
            return runs[-1]
        for run in runs:
            if run.info["id"] == run_id:
                return run
        raise KeyError(f"no run {run_id!r}: see /api/v1/runs for the runs on file")
