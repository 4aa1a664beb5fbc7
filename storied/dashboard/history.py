"""The one query interface the dashboard reads, answered live or from ledger files.

As in Spark's UI and history server, the pages never ask a scheduler or a file directly: they
read a ``RunHistory`` (one run's record) picked from a ``Catalog`` (the runs on offer). A
running scheduler answers with ``LiveRun``; a ledger file, long after, with ``LedgerRun``. Both
return the same plain records, so live and after-the-fact pages cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from storied.dashboard.logtail import LiveLogFeed
from storied.dashboard.stored import StoredTasks
from storied.dashboard.tally import Execution, RunCounts, TaskPages, TaskTable
from storied.record.events import EventRecord
from storied.record.failures import explain_story
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry, logger_matches
from storied.record.window import within
from storied.scheduler.telemetry import METRICS_TOPIC

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.dashboard")

#: The id of the one run a live scheduler offers.
LIVE_RUN = "live"
#: How many ``worker-metrics`` events a finished run's last samples are read in at a time.
SAMPLE_PAGE = 1_000

T = TypeVar("T")


@dataclass(frozen=True)
class LogFilter:
    """Which log records a page shows: at ``level`` and above, of ``logger`` and its children
    (None: every logger), logged in ``[since, until)``."""

    level: int = 0
    logger: str | None = None
    since: float | None = None
    until: float | None = None

    def admits(self, entry: LogRecordEntry) -> bool:
        return (
            entry.levelno >= self.level
            and (self.logger is None or logger_matches(entry.logger, self.logger))
            and within(entry.timestamp, self.since, self.until)
        )


class RunHistory(Protocol):
    """One run's record: what every page of the dashboard is built from."""

    #: ``id``, ``live``, ``started``, ``ended`` and what the run recorded about itself
    info: dict[str, Any]
    #: new log records as they come (the logs page's live tail); None for a run on file
    log_feed: LiveLogFeed | None

    def version(self) -> Any:
        """Changes whenever what the status page shows may have: pushes are sent on change."""
        ...

    def tasks_version(self) -> Any:
        """Changes whenever the tasks' states or executions may have (not on heartbeats):
        the tasks page's push and the live task table's count follow it."""
        ...

    #: how long the newest count of the task table took (0 for one read from a ledger)
    count_seconds: float

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        """Live load by worker address (``nthreads``, ``processing``, ``in_memory``); a run
        read from a ledger has none."""
        ...

    async def last_samples(self) -> dict[str, dict[str, Any]]:
        """Each worker's newest resource sample (``memory`` bytes, ``cpu`` %, ...) by address:
        live from the heartbeats kept in memory, offline from the run's ``worker-metrics``
        events (the last of each worker)."""
        ...

    async def counts(self) -> RunCounts:
        """Executions by worker, outcome and prefix, and tasks by state and prefix: cheap to
        ask again and again of a live run (the status push does)."""
        ...

    async def tasks(self) -> TaskPages:
        """Every task: its state on the scheduler (live: now; offline: its outcome, as
        ``Ledger.tasks`` gives it) and its executions, counted (or as the ledger stored them
        when the run ended). Its ``page`` and ``starting_with`` may read the ledger: call
        them in a thread."""
        ...

    async def executions(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` task runs on worker threads, oldest first: ``key, worker,
        thread, start, stop, outcome``."""
        ...

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        """Cluster-wide transitions of keys or stimulus ids (``TransitionRecord.as_dict``,
        with ``run_id`` and the ``failure`` that caused it, if any), in time order."""
        ...

    async def event_counts(self) -> dict[str, int]: ...

    async def events(
        self,
        topic: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[EventRecord]:
        """Events oldest first; ``after_seq`` for tails, ``before_seq`` for older pages,
        ``since``/``until`` for those logged in ``[since, until)``, ``limit`` keeps the
        newest."""
        ...

    async def logs(
        self, wanted: LogFilter, limit: int | None = None, offset: int = 0
    ) -> list[LogRecordEntry]:
        """Log records of the scheduler and workers that ``wanted`` admits, oldest first: the
        newest ``limit`` after skipping the ``offset`` newest."""
        ...

    async def loggers(self) -> dict[str, int]:
        """How many log records each logger wrote in the run (what the logs page offers)."""
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


def _newest(records: list[Any], limit: int | None, offset: int = 0) -> list[Any]:
    """The newest ``limit`` of ``records`` (oldest first) after skipping the ``offset`` newest."""
    end = len(records) - offset
    return records[: max(end, 0)] if limit is None else records[max(end - limit, 0) : max(end, 0)]


class LiveRun:
    """A running scheduler's record and state, read on its event loop.

    Its record also answers from earlier runs on the same ledger file; the dashboard shows
    this run alone (as it does a run read from a ledger), so it keeps seqs from
    ``Record.first_seq`` on.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.info = {
            "id": LIVE_RUN,
            "live": True,
            "address": scheduler.address,
            "started": time.time(),  # the dashboard starts with its scheduler
            "ended": None,
        }
        self.log_feed: LiveLogFeed | None = LiveLogFeed(scheduler)
        self._table: tuple[tuple[int, int], TaskTable] | None = None
        self._counting = asyncio.Lock()
        #: how long the newest count of the task table took (the tasks push spaces by it)
        self.count_seconds = 0.0
        self._counts = RunCounts()
        self._counted_through = 0

    def version(self) -> Any:
        return (
            *self.tasks_version(),
            len(self.scheduler.state.workers),
            self.scheduler.extensions["telemetry"].received,
        )

    def tasks_version(self) -> tuple[int, int]:
        record = self.scheduler.record
        return (record.transitions_recorded, record.executions_recorded)

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        return {
            address: worker.identity() for address, worker in self.scheduler.state.workers.items()
        }

    async def last_samples(self) -> dict[str, dict[str, Any]]:
        """Departed workers' too, while the scheduler keeps their history."""
        telemetry = self.scheduler.extensions["telemetry"]
        return {address: samples[-1] for address, samples in telemetry.history.items() if samples}

    async def counts(self) -> RunCounts:
        """Adds the executions recorded since the last look (those that fell out of memory
        meanwhile go uncounted), and takes the tasks' states now."""
        record = self.scheduler.record
        new = record.executions(since=self._counted_through)
        self._counted_through = record.executions_recorded
        self._counts.add_executions(_execution_tuples(new))
        self._counts.set_states((key, ts.state) for key, ts in self.scheduler.state.tasks.items())
        return self._counts

    async def tasks(self) -> TaskTable:
        """Counted afresh only when a task moved or ran since the last count: the states and
        executions are taken on the loop, counted in a thread (tens of thousands of tasks
        take a second or more on a loaded machine, which the scheduler's loop must not wait
        for), one count at a time; pages that asked meanwhile share it."""
        asked = self.tasks_version()
        async with self._counting:
            if self._table is not None and self._table[0] >= asked:
                return self._table[1]
            version = self.tasks_version()
            executions = self.scheduler.record.executions()
            states = {key: ts.state for key, ts in self.scheduler.state.tasks.items()}
            started = time.perf_counter()
            table = await asyncio.to_thread(_count_tasks, states, executions)
            self.count_seconds = time.perf_counter() - started
            self._table = (version, table)
            return table

    async def executions(self, limit: int | None = None) -> list[dict[str, Any]]:
        return _newest(self.scheduler.record.executions(), limit)

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        first = self.scheduler.record.first_seq
        entries = await self.scheduler._cluster_story(names, on_error="ignore")
        return [entry for entry in entries if entry["seq"] >= first]

    async def event_counts(self) -> dict[str, int]:
        return self.scheduler.record.event_counts()

    async def events(
        self,
        topic: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[EventRecord]:
        record = self.scheduler.record
        if after_seq is not None:  # a tail: new events are in memory, the ledger is not read
            new = record.events_after(after_seq, topic)
            return _newest([r for r in new if within(r.timestamp, since, until)], limit)
        if topic is not None and limit is not None:  # one page, not the whole topic
            return await self.scheduler._off_loop(
                record.events_page, topic, before_seq, since, until, limit, None, record.run_id
            )
        found = await self.scheduler._off_loop(record.events, topic, detail=True)
        records = found if topic is not None else [r for rs in found.values() for r in rs]
        upper = before_seq if before_seq is not None else float("inf")
        this_run = [
            r
            for r in records
            if record.first_seq <= r.seq < upper and within(r.timestamp, since, until)
        ]
        return _newest(sorted(this_run, key=_by_seq), limit)

    async def logs(
        self, wanted: LogFilter, limit: int | None = None, offset: int = 0
    ) -> list[LogRecordEntry]:
        admitted = [entry for entry in await self._log_entries() if wanted.admits(entry)]
        return _newest(admitted, limit, offset)

    async def loggers(self) -> dict[str, int]:
        return dict(Counter(entry.logger for entry in await self._log_entries()))

    async def _log_entries(self) -> list[LogRecordEntry]:
        """The scheduler's and every worker's log records held in memory, oldest first."""
        return [LogRecordEntry(*fields) for fields in await self.scheduler._log_entries()]


def _by_seq(record: EventRecord) -> int:
    return record.seq


def _count_tasks(states: dict[str, str], executions: list[dict[str, Any]]) -> TaskTable:
    return TaskTable(states, _execution_tuples(executions))


def _execution_tuples(executions: list[dict[str, Any]]) -> list[Execution]:
    return [(e["key"], e["worker"], e["start"], e["stop"], e["outcome"]) for e in executions]


class LedgerRun:
    """One run on a ledger file; every read runs in a thread, off the serving loop.

    A run that has ended never changes, so what it costs to count (the task table, the event
    counts) is counted once and kept.
    """

    def __init__(self, ledger: Ledger, run_id: int, info: dict[str, Any]) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.info = info
        self.log_feed: LiveLogFeed | None = None
        self.count_seconds = 0.0
        self._kept: dict[str, Any] = {}
        self._lock = threading.Lock()

    def version(self) -> Any:
        return self.info["ended"]

    def tasks_version(self) -> Any:
        return self.info["ended"]

    def _counted(self, name: str, count: Callable[[], T]) -> T:
        """``count()``, kept once the run has ended; one thread counts at a time."""
        with self._lock:
            if name in self._kept:
                return cast(T, self._kept[name])
            found = count()
            if self.info["ended"] is not None:
                self._kept[name] = found
            return found

    def task_table(self) -> TaskPages:
        """The run's tasks: read from the summary the ledger stored when the run ended, or
        (without one) counted on the calling thread; kept once the run has ended."""
        return self._counted("tasks", self._summed_up_or_counted)

    def _summed_up_or_counted(self) -> TaskPages:
        if self.info["ended"] is not None:
            stored = self.ledger.task_counts(self.run_id)
            if stored is not None:
                return StoredTasks(self.ledger, self.run_id, stored)
        return TaskTable(
            self.ledger.scheduler_outcomes(self.run_id),
            self.ledger.execution_outcomes(self.run_id),
        )

    async def workers_now(self) -> dict[str, dict[str, Any]]:
        return {}

    async def last_samples(self) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self._counted, "last_samples", self._read_last_samples)

    def _read_last_samples(self) -> dict[str, dict[str, Any]]:
        """Pages of ``worker-metrics`` events, newest first, until every worker that joined
        the run has its sample or the run's samples are all read."""
        joined = {
            rec.msg["worker"]
            for rec in self.ledger.events("all", run_id=self.run_id)
            if isinstance(rec.msg, dict) and rec.msg.get("action") == "add-worker"
        }
        found: dict[str, dict[str, Any]] = {}
        below = None
        while True:
            page = self.ledger.events(
                METRICS_TOPIC, limit=SAMPLE_PAGE, run_id=self.run_id, max_seq=below
            )
            for rec in reversed(page):
                msg = rec.msg
                if isinstance(msg, dict) and isinstance(msg.get("worker"), str):
                    found.setdefault(msg["worker"], msg)
            if len(page) < SAMPLE_PAGE or joined <= found.keys():
                return found
            below = page[0].seq

    async def counts(self) -> RunCounts:
        return (await self.tasks()).counts

    async def tasks(self) -> TaskPages:
        return await asyncio.to_thread(self.task_table)

    async def executions(self, limit: int | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.ledger.executions, self.run_id, limit)

    async def story(self, names: list[str]) -> list[dict[str, Any]]:
        def explained() -> list[dict[str, Any]]:
            records = self.ledger.story(*names, run_id=self.run_id)
            entries = [{"run_id": self.run_id, **rec.as_dict()} for rec in records]
            keys = {entry["key"] for entry in entries}
            explain_story(entries, self.ledger.failures(keys, run_id=self.run_id))
            return sorted(entries, key=lambda entry: entry["timestamp"])

        return await asyncio.to_thread(explained)

    async def event_counts(self) -> dict[str, int]:
        def count() -> dict[str, int]:
            return dict(Counter(rec.topic for rec in self.ledger.events(run_id=self.run_id)))

        return await asyncio.to_thread(self._counted, "event_counts", count)

    async def events(
        self,
        topic: str | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[EventRecord]:
        return await asyncio.to_thread(
            self.ledger.events,
            topic,
            since,
            until,
            limit=limit,
            run_id=self.run_id,
            after_seq=after_seq,
            max_seq=before_seq,
        )

    async def logs(
        self, wanted: LogFilter, limit: int | None = None, offset: int = 0
    ) -> list[LogRecordEntry]:
        found = await asyncio.to_thread(
            self.ledger.logs,
            wanted.level or None,
            since=wanted.since,
            limit=None if limit is None else limit + offset,
            run_id=self.run_id,
            until=wanted.until,
            logger=wanted.logger,
        )
        return _newest(found, limit, offset)

    async def loggers(self) -> dict[str, int]:
        return await asyncio.to_thread(
            self._counted, "loggers", lambda: self.ledger.logger_counts(self.run_id)
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
        #: the runs read so far by id: each keeps what it has counted
        self._known: dict[str, LedgerRun] = {}

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
                known = self._known.get(info["id"])
                if known is None or known.info["ended"] != info["ended"]:
                    known = self._known[info["id"]] = LedgerRun(ledger, run["run_id"], info)
                runs.append(known)
        runs.sort(key=lambda run: run.info["started"])
        return runs

    def count_ahead(self) -> None:
        """Count the task tables of the runs that have ended, newest first, so that the first
        look at a large run finds them counted (run in a thread at start); a run with a stored
        summary only has its counts read."""
        started = time.perf_counter()
        ended = [
            run
            for run in reversed(self._read_runs())
            if isinstance(run, LedgerRun) and run.info["ended"] is not None
        ]
        for run in ended:
            run.task_table()
        logger.info(
            "Counted (or read the summaries of) the tasks of %d finished runs in %.1f s",
            len(ended),
            time.perf_counter() - started,
        )

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
