"""The record: the one place a process's history lives.

State machines write through the narrow write side of ``Record`` (``transition``, ``event``,
``execution`` and the log handler); every read (stories, events, logs) goes through its read
side, which answers from memory and, when a ``Ledger`` is attached, from disk too.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Protocol, TypeVar

from storied.record.errors import LedgerCorruptError, LedgerLockedError
from storied.record.events import (
    EventLedger,
    EventRecord,
    StoredEvent,
    check_event,
    check_topics,
    pack_event,
    pack_msg,
    unpack_msg,
)
from storied.record.failures import explain_story
from storied.record.ledger import Ledger, LedgerError
from storied.record.ledgerset import LedgerSet
from storied.record.logcapture import LogCapture, LogRecordEntry, newer_than
from storied.record.shipments import Shipment, checked_shipment
from storied.record.trace import chrome_trace
from storied.record.transitions import (
    TransitionEntry,
    TransitionLog,
    TransitionRecord,
)

__all__ = [
    "EventLedger",
    "EventRecord",
    "Ledger",
    "LedgerCorruptError",
    "LedgerError",
    "LedgerLockedError",
    "LedgerSet",
    "LogCapture",
    "LogRecordEntry",
    "NoRecord",
    "Record",
    "TransitionEntry",
    "TransitionLog",
    "TransitionRecord",
    "check_event",
    "check_topics",
    "chrome_trace",
    "pack_event",
    "unpack_msg",
]


_now = time.time  # bound once: events are recorded many times per second


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


_R = TypeVar("_R", bound=_Sequenced)


def _merge(disk: Iterable[_R], memory: Iterable[_R]) -> list[_R]:
    """Records from both sources, each once (memory wins), in seq order."""
    unique = {rec.seq: rec for rec in disk}
    unique.update((rec.seq, rec) for rec in memory)
    return [unique[seq] for seq in sorted(unique)]


class NoRecord:
    """A recorder that keeps nothing: for measuring what recording transitions costs."""

    def transition(self, *args: Any, **kwargs: Any) -> None:
        return None


class Record:
    """One process's history: transitions, events, executions, logs; optionally durable.

    Sequence numbers come from one counter shared by every log of the Record; with a ledger
    they continue after the last run on file, so memory and disk records merge by seq. Read
    results are ordered by seq: the order in which this Record learnt of them.
    """

    def __init__(
        self,
        where: str = "scheduler",
        *,
        transition_log_length: int = 100_000,
        events_per_topic: int = 100_000,
        event_bytes_per_topic: int | None = None,
        log_length: int = 10_000,
        execution_log_length: int = 100_000,
        ledger: Ledger | None = None,
        run_info: dict[str, Any] | None = None,
        run_in_owner: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        """``run_info`` is stored with the run in the ledger (e.g. the scheduler address).

        ``run_in_owner(read)`` runs ``read`` on the thread that records (an event loop's, say)
        and returns its result: readers on other threads take what is in memory through it,
        then flush and read the ledger on their own thread, so a slow disk holds up the reader
        and never the recording thread. Without it, everything is read on the calling thread.
        """
        self.where = where
        self._run_in_owner = run_in_owner or operator.call
        self.run_id: int | None = None
        self._ledger = ledger
        first_seq = 1
        self._put_shipment: Callable[[str, int, Shipment], None] | None = None
        self._put_event: Callable[[str, StoredEvent], None] | None = None
        #: the ledger's list of this run's executions (``Ledger.execution_rows``)
        self._ledger_executions: list[tuple[Any, ...]] | None = None
        #: how long that list may grow before executions are dropped (and counted)
        self._ledger_capacity = 0 if ledger is None else ledger.queue_size
        self._put_failure: Callable[[dict[str, Any]], None] | None = None
        put_log: Callable[[LogRecordEntry], None] | None = None
        if ledger is not None:
            info = {"where": where, "pid": os.getpid(), "host": socket.gethostname()}
            self.run_id = run_id = ledger.start_run({**info, **(run_info or {})})
            first_seq = ledger.first_seq(run_id)
            self._put_shipment = partial(ledger.put_shipment, run_id)
            self._put_event = partial(ledger.put_event, run_id)
            self._ledger_executions = ledger.execution_rows(run_id)
            self._put_failure = partial(ledger.put_failure, run_id)
            put_log = partial(ledger.put_log, run_id)
        #: every record of this run has a seq from here on (earlier ones: earlier runs on file)
        self.first_seq = first_seq
        self._seq = itertools.count(first_seq)
        self._log = TransitionLog(transition_log_length, where, seq=self._seq)
        #: Record one transition this process made: ``transition(key, start, finish,
        #: recommendations, stimulus_id, worker=None, timestamp=None)``. It is the log's own
        #: ``append``, with no wrapper: it runs several times per task. The record keeps
        #: ``recommendations`` as it is, so hand over a dict you will not change afterwards
        #: (readers get copies). With a ledger, the ledger's writer thread reads the entry from
        #: the log later (see ``Ledger.follow``).
        self.transition = self._log.append
        if ledger is not None:
            ledger.follow(run_id, self._log)
        self._events = EventLedger(
            events_per_topic, seq=self._seq, max_bytes_per_topic=event_bytes_per_topic
        )
        self._executions: deque[dict[str, Any]] = deque(maxlen=execution_log_length)
        self._failures: deque[dict[str, Any]] = deque(maxlen=execution_log_length)
        #: executions recorded so far, the oldest fallen out of memory included: a cursor that
        #: does not depend on clocks (``get_task_stream`` reads what came after it)
        self.executions_recorded = 0
        self._put_log = put_log
        self._log_capture = LogCapture(log_length, where, on_record=put_log)
        #: the newest records workers shipped here, for live tails (the ledger keeps them all)
        self._remote_logs: deque[LogRecordEntry] = deque(maxlen=log_length)
        #: records workers shipped so far, those fallen out included: a tail's cursor
        self.remote_logs_received = 0

    # ------------------------------------------------------------------ write side

    def worker_transitions(self, where: str, shipped: Any) -> int:
        """Keep transitions that worker ``where`` shipped, packed as
        ``storied.record.shipments.pack_shipment`` packs them; return how many.

        Workers ship only to a scheduler with a ledger, so their history outlives them; it goes
        to the ledger alone (stories read it back from there) as it came: the transitions are
        not unpacked here, only the message's fields are checked (a malformed one raises
        ``ValueError`` and nothing of it is kept; malformed transitions inside are found and
        skipped where they are read). Without a ledger this keeps nothing.
        """
        shipment = checked_shipment(shipped)
        count = shipment.count
        if self._put_shipment is None or not count:
            return 0
        first_seq = next(self._seq)
        deque(islice(self._seq, count - 1), maxlen=0)  # the shipment's seqs, taken in C
        self._put_shipment(where, first_seq, shipment)
        return count

    def event(
        self, topics: list[str], msg: Any, source: str, timestamp: float | None = None
    ) -> float:
        """Record an event under each topic; validate it with ``check_event`` first."""
        return self.packed_event(topics, pack_msg(msg), source, timestamp)

    def packed_event(
        self, topics: list[str], packed: bytes, source: str, timestamp: float | None = None
    ) -> float:
        """Record an event whose message is packed already (see ``pack_event``)."""
        stamp = _now() if timestamp is None else timestamp
        for topic in topics:
            stored = self._events.append(topic, packed, source, stamp)
            if self._put_event is not None:
                self._put_event(topic, stored)
        return stamp

    def execution(
        self, key: str, worker: str, thread: int, start: float, stop: float, outcome: str
    ) -> None:
        """Record one run of a task on a worker thread (``outcome``: "memory" or "erred")."""
        self.executions_recorded += 1
        self._executions.append(
            {
                "key": key,
                "worker": worker,
                "thread": thread,
                "start": start,
                "stop": stop,
                "outcome": outcome,
            }
        )
        rows = self._ledger_executions
        if rows is not None:
            if len(rows) < self._ledger_capacity:
                rows.append((key, worker, thread, start, stop, outcome))
            elif self._ledger is not None:
                self._ledger.count_dropped(1)

    def failure(self, failure: dict[str, Any]) -> None:
        """Record why a task failed: one failed attempt, or a dependent erring because of one
        (a dict with the keys of ``storied.record.ledger.FAILURE_FIELDS``). Failures are rare,
        so they are kept apart from transitions, which stay as cheap to record as ever."""
        self._failures.append(failure)
        if self._put_failure is not None:
            self._put_failure(failure)

    def remote_log(self, entry: LogRecordEntry) -> None:
        """A log record shipped here from another process (a worker): kept in the ledger, and
        the newest in memory for live tails."""
        self._remote_logs.append(entry)
        self.remote_logs_received += 1
        if self._put_log is not None:
            self._put_log(entry)

    def remote_logs_after(self, count: int) -> tuple[list[LogRecordEntry], int]:
        """Shipped records after the first ``count`` still in memory, oldest first, and the
        count to ask from next time."""
        received = self.remote_logs_received
        return newer_than(self._remote_logs, received, count), received

    @property
    def dropped(self) -> int:
        """Records the ledger had to drop under overload (each also counted in a warning)."""
        return self._ledger.dropped if self._ledger is not None else 0

    @property
    def ledger_write_error(self) -> str | None:
        """Why the ledger's latest write failed (file and cause), if one did."""
        return self._ledger.write_error if self._ledger is not None else None

    @property
    def transitions_recorded(self) -> int:
        """Transitions this process recorded since it started, counting those fallen out."""
        return self._log.total

    @property
    def transitions_kept(self) -> int:
        """How many of the latest transitions the log holds (``transition_log_length``)."""
        return self._log.maxlen

    def transitions_after(
        self, recorded: int
    ) -> tuple[int, int, list[TransitionEntry], list[dict[str, str]]]:
        """The transitions recorded after the first ``recorded``, for a reader that passes
        them on (a worker ships them to a durable scheduler): ``(recorded now, how many fell
        out unread, entries, their recommendations)``."""
        return self._log.entries_after(recorded)

    def call_when_recorded(self, recorded: int, callback: Callable[[], object] | None) -> None:
        """Have the recording thread call ``callback`` once, as it records transition number
        ``recorded`` (counting from 1; None: no call). One callback at a time: the reader of
        ``transitions_after`` learns of new ones without a check on every transition. Not for a
        durable Record: its ledger reads the transitions that way."""
        if self._ledger is not None:
            raise RuntimeError("a durable Record's transitions are read by its ledger")
        self._log.reader_wake_at = sys.maxsize if callback is None else recorded
        self._log.wake_reader = callback

    @property
    def ledger_written(self) -> int:
        """Records the ledger committed to its file (0 without a ledger)."""
        return self._ledger.written if self._ledger is not None else 0

    @property
    def durable(self) -> bool:
        """True when history goes to a ledger file as well as memory."""
        return self._ledger is not None

    @property
    def ledger_path(self) -> Path | None:
        """Where the ledger file is, if history is durable."""
        return self._ledger.path if self._ledger is not None else None

    def log_handler(self) -> LogCapture:
        """The handler to attach to this process's loggers (e.g. "storied.scheduler")."""
        return self._log_capture

    # ------------------------------------------------------------------ read side

    def _logs_for(self, where: str | None) -> list[TransitionLog]:
        """The in-memory logs that may hold transitions made by ``where`` (None: anyone)."""
        return [self._log] if where is None or where == self.where else []

    def flush(self) -> None:
        """With a ledger, wait until everything recorded so far is on disk."""
        if self._ledger is not None:
            self._ledger.flush()

    def _readable_ledger(self) -> Ledger | None:
        """The ledger, flushed so that whatever fell out of memory is on disk."""
        self.flush()
        return self._ledger

    @staticmethod
    def _disk_bound(where: str | None, logs: list[TransitionLog]) -> int | None:
        """For one process's log, disk records from its oldest seq on are still in memory."""
        return logs[0].oldest_seq if where is not None and logs else None

    def story(
        self, *keys_or_stimulus_ids: str
    ) -> list[tuple[str, str, str, dict[str, str], float]]:
        """This process's own transitions concerning the keys or stimulus ids, as 5-tuples."""
        records = self.story_records(*keys_or_stimulus_ids, where=self.where)
        return [rec.as_tuple() for rec in records]

    def story_records(
        self, *keys_or_stimulus_ids: str, where: str | None = None, run: int | str = "all"
    ) -> list[TransitionRecord]:
        """Full records; ``where=None`` adds the workers' transitions kept in the ledger.

        ``run``: "all" runs on the ledger file, "current" (this run's alone), or a run id.
        """
        run_id = self._run_id_of(run)
        logs = self._logs_for(where) if run_id in (None, self.run_id) else []

        def in_memory() -> tuple[list[TransitionRecord], int | None]:
            story = [rec for log in logs for rec in log.story(*keys_or_stimulus_ids)]
            return story, self._disk_bound(where, logs)

        memory, disk_bound = self._run_in_owner(in_memory)
        ledger = self._readable_ledger()
        if ledger is None:
            return memory
        disk = ledger.story(*keys_or_stimulus_ids, where=where, max_seq=disk_bound, run_id=run_id)
        return _merge(disk, memory)

    def story_page(
        self,
        *keys_or_stimulus_ids: str,
        before_seq: int | None = None,
        limit: int = 1_000,
        run: int | str = "all",
    ) -> list[TransitionRecord]:
        """One page of the cluster story (``story_records(where=None, run=run)``): its newest
        ``limit`` records below ``before_seq``, oldest first; the next page is below this
        one's first seq, and an empty page is the end. The newest of memory and disk together
        are among the newest of each, so each side is read for ``limit`` records at most."""
        run_id = self._run_id_of(run)
        in_this_run = run_id in (None, self.run_id)

        def in_memory() -> list[TransitionRecord]:
            story = self._log.story(*keys_or_stimulus_ids) if in_this_run else []
            if before_seq is not None:
                story = [rec for rec in story if rec.seq < before_seq]
            return story[-limit:] if limit else []

        memory = self._run_in_owner(in_memory)
        ledger = self._readable_ledger()
        if ledger is None:
            return memory
        disk = ledger.story(*keys_or_stimulus_ids, max_seq=before_seq, limit=limit, run_id=run_id)
        merged = _merge(disk, memory)
        return merged[max(len(merged) - limit, 0) :]

    def _run_id_of(self, run: int | str) -> int | None:
        """The run id a ``run`` argument asks for; None for all runs."""
        if run == "all":
            return None
        if run == "current":
            return self.run_id
        if isinstance(run, int) and not isinstance(run, bool):
            return run
        raise ValueError(f"run must be 'all', 'current' or a run id (int), not {run!r}")

    def explained_story(
        self, *names: str, where: str | None = None, run: int | str = "current"
    ) -> list[dict[str, Any]]:
        """``story_records`` as ``explain`` gives them, in time order."""
        entries = self.explain(self.story_records(*names, where=where, run=run), run)
        entries.sort(key=lambda entry: entry["timestamp"])
        return entries

    def explain(self, records: list[TransitionRecord], run: int | str) -> list[dict[str, Any]]:
        """Transition records as dicts, each with its ``run_id`` and the ``failure`` that
        caused it, if any (see ``storied.record.failures``)."""
        run_id = self._run_id_of(run)
        ledger = self._ledger
        runs: Iterable[int | None] = (
            repeat(run_id)
            if run_id is not None or ledger is None
            else ledger.run_of(rec.seq for rec in records)
        )
        entries = [
            {"run_id": rec_run, **rec.as_dict()}
            for rec_run, rec in zip(runs, records, strict=False)
        ]
        keys = {entry["key"] for entry in entries}
        failures = (
            ledger.failures(keys, run_id=run_id) if ledger is not None else self.failures(keys)
        )
        explain_story(entries, failures)
        return entries

    def transitions(
        self,
        keys: Iterable[str] | None = None,
        stimulus_id: str | None = None,
        start: str | None = None,
        finish: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        where: str | None = None,
    ) -> list[TransitionRecord]:
        """Filters ANDed (see ``TransitionLog.query``); ``limit`` keeps the newest."""
        key_list = None if keys is None else list(keys)
        filters = {
            "keys": key_list,
            "stimulus_id": stimulus_id,
            "start": start,
            "finish": finish,
            "since": since,
            "until": until,
            "limit": limit,
        }
        logs = self._logs_for(where)

        def in_memory() -> tuple[list[TransitionRecord], int | None]:
            found = [rec for log in logs for rec in log.query(**filters)]
            return found, self._disk_bound(where, logs)

        memory, disk_bound = self._run_in_owner(in_memory)
        ledger = self._readable_ledger()
        disk = (
            ledger.transitions(**filters, where=where, max_seq=disk_bound)
            if ledger is not None
            else []
        )
        merged = _merge(disk, memory)
        return merged if limit is None else merged[max(len(merged) - limit, 0) :]

    def events(self, topic: str | None = None, detail: bool = False, run: int | str = "all") -> Any:
        """Events as ``Client.get_events`` returns them: ``(timestamp, msg)`` tuples per topic.

        With ``detail`` the full ``EventRecord``s come back instead, as lists. ``run`` as for
        ``story_records``.
        """
        run_id = self._run_id_of(run)
        if topic is not None:
            records = self._event_records(topic, run_id)
            return records if detail else tuple((rec.timestamp, rec.msg) for rec in records)
        by_topic = self._all_event_records(run_id)
        if detail:
            return by_topic
        return {
            name: tuple((rec.timestamp, rec.msg) for rec in records)
            for name, records in by_topic.items()
        }

    def _event_records(self, topic: str, run_id: int | None) -> list[EventRecord]:
        memory, oldest_seq = self._run_in_owner(
            lambda: (self._events.get_detail(topic), self._events.oldest_seq(topic))
        )
        if run_id not in (None, self.run_id):
            memory, oldest_seq = [], None
        ledger = self._readable_ledger()
        if ledger is None:
            return memory
        return _merge(ledger.events(topic, max_seq=oldest_seq, run_id=run_id), memory)

    def _all_event_records(self, run_id: int | None) -> dict[str, list[EventRecord]]:
        memory = self._run_in_owner(self._events.get_detail)
        if run_id not in (None, self.run_id):
            memory = {}
        ledger = self._readable_ledger()
        if ledger is None:
            return memory
        disk: dict[str, list[EventRecord]] = {}
        for rec in ledger.events(run_id=run_id):
            disk.setdefault(rec.topic, []).append(rec)
        return {
            name: _merge(disk.get(name, ()), memory.get(name, ())) for name in {**disk, **memory}
        }

    def event_topics(self) -> list[str]:
        """Every topic with events, in memory or in the ledger (all runs)."""
        memory = self._run_in_owner(self._events.topics)
        ledger = self._readable_ledger()
        disk = ledger.event_topics() if ledger is not None else []
        return list(dict.fromkeys([*disk, *memory]))

    def events_page(
        self,
        topic: str,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1_000,
        max_bytes: int | None = None,
        run: int | str = "all",
    ) -> list[EventRecord]:
        """One page of ``topic``'s events, oldest first: the newest ``limit`` below
        ``before_seq`` (None: from the newest) within ``[since, until)``; the next page is
        below this page's first seq, and an empty page is the end.

        Memory holds a topic's newest events, so a page starts there and goes on in the
        ledger below the oldest in memory. ``max_bytes`` bounds the part from memory; what
        comes from the ledger is bounded by ``limit`` (each event by ``events.max-event-size``).
        ``run`` as for ``story_records``: memory holds this run's events only.
        """
        run_id = self._run_id_of(run)

        def in_memory() -> tuple[list[EventRecord], bool, int | None]:
            if run_id not in (None, self.run_id):
                return [], True, None
            page, exhausted = self._events.page(topic, before_seq, since, until, limit, max_bytes)
            return page, exhausted, self._events.oldest_seq(topic)

        memory, exhausted, oldest_seq = self._run_in_owner(in_memory)
        ledger = self._readable_ledger()
        if ledger is None or not exhausted or len(memory) >= limit:
            return memory
        bounds = [seq for seq in (before_seq, oldest_seq) if seq is not None]
        disk = ledger.events(
            topic,
            since,
            until,
            limit - len(memory),
            max_seq=min(bounds) if bounds else None,
            run_id=run_id,
        )
        return disk + memory

    def events_after(self, seq: int, topic: str | None = None) -> list[EventRecord]:
        """Events newer than ``seq`` still in memory (where new ones always are), oldest first:
        what a live tail polls for, without touching the ledger."""
        return self._run_in_owner(lambda: self._events.after(seq, topic))

    def event_counts(self) -> dict[str, int]:
        """Events logged per topic by this run, counting those that fell out of memory."""
        return self._events.counts()

    def executions(self, since: int | None = None) -> list[dict[str, Any]]:
        """The most recent task executions (the full timeline is in the ledger); with ``since``
        (a past ``executions_recorded``), only those recorded after it that are still held."""
        if since is None:
            return list(self._executions)
        newer = max(self.executions_recorded - since, 0)
        return list(self._executions)[max(len(self._executions) - newer, 0) :]

    def failures(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """This run's failures of ``keys`` still in memory, oldest first (the ledger keeps
        every run's: ``Ledger.failures``)."""
        wanted = set(keys)
        memory = self._run_in_owner(lambda: [f for f in self._failures if f["key"] in wanted])
        return [{"run_id": self.run_id, **failure} for failure in memory]

    def logs(self, n: int | None = None) -> list[tuple[str, str]]:
        """``(levelname, formatted message)``, newest first, as dask's ``get_scheduler_logs``."""
        return self._log_capture.get(n)

    def close(self) -> None:
        """Flush and close the ledger, if any; history stays readable from memory and disk."""
        self._stop_writing()
        if self._ledger is not None:
            self._ledger.close()

    async def close_in_thread(self) -> None:
        """``close`` for the event loop that records: the ledger's last writes (the run's
        summary among them, seconds at a million tasks) finish in a thread while the loop goes
        on; the ledger is complete and closed when this returns."""
        self._stop_writing()
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.close)

    def _stop_writing(self) -> None:
        """Nothing more goes to the ledger (on the recording thread: it reads these)."""
        self._log_capture.on_record = None
        self._put_shipment = None
        self._put_event = self._put_log = self._put_failure = None
        self._ledger_executions = None
