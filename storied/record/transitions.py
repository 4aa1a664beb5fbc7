"""Bounded, indexed in-memory log of task state transitions.

Every transition the scheduler (or a worker) makes lands here, several per task, so appending
must cost well under a microsecond and a story lookup must never scan the log.

Writing is kept to the bare minimum. A transition is stored in a preallocated ring as a plain
tuple of atomic values (a ``TransitionEntry``), which the garbage collector stops tracking after
its first pass, with its recommendations dict in a parallel ring. The indexes (task key, counting
keys named in recommendations; and stimulus id) map a name to the list of *ordinals* (append
numbers) of its entries. Nothing is evicted from the indexes one record at a time: they come in
two generations, each covering ``maxlen`` appends, and when the ring wraps the older generation
is dropped whole. A reader skips the ordinals that have fallen out of the ring.
``TransitionRecord`` objects are built only when read.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

#: ``(seq, key, start, finish, stimulus_id, timestamp, where, worker)``: a ``TransitionRecord``
#: but for its recommendations, which are kept and queued beside it.
TransitionEntry = tuple[int, str, str, str, str, float, str, str | None]

#: Where a log hands each entry as it is appended: ``sink(entry, recommendations)``.
TransitionSink = Callable[[TransitionEntry, dict[str, str]], None]


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One state change of one task, with the stimulus that caused it."""

    seq: int
    key: str
    start: str
    finish: str
    recommendations: dict[str, str]
    stimulus_id: str
    timestamp: float
    where: str
    worker: str | None = None

    @classmethod
    def from_entry(
        cls, entry: TransitionEntry, recommendations: dict[str, str]
    ) -> TransitionRecord:
        """The record of a logged entry, with its own copy of the recommendations.

        The copy is what keeps the log itself safe from whoever reads it.
        """
        seq, key, start, finish, stimulus_id, timestamp, where, worker = entry
        return _new_record(
            seq, key, start, finish, dict(recommendations), stimulus_id, timestamp, where, worker
        )

    def as_tuple(self) -> tuple[str, str, str, dict[str, str], float]:
        """The 5-tuple that ``Scheduler.story`` returns, as dask users know it."""
        return (self.key, self.start, self.finish, self.recommendations, self.timestamp)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "key": self.key,
            "start": self.start,
            "finish": self.finish,
            "recommendations": dict(self.recommendations),
            "stimulus_id": self.stimulus_id,
            "timestamp": self.timestamp,
            "where": self.where,
            "worker": self.worker,
        }


def concerned_keys(key: str, recommendations: Iterable[str]) -> Iterator[str]:
    """A transition's own key and every key it recommends, once each: what the key index holds."""
    yield key
    for recommended in recommendations:
        if recommended != key:
            yield recommended


def _fast_constructor() -> Callable[..., TransitionRecord]:
    """A constructor equivalent to ``TransitionRecord(...)`` at half the cost.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; setting the
    slots through their descriptors does the same thing faster (which counts when a query builds
    100,000 records) and keeps the type frozen for everybody else.
    """
    setters = [getattr(TransitionRecord, field.name).__set__ for field in fields(TransitionRecord)]
    set_seq, set_key, set_start, set_finish, set_recs, set_stim, set_ts, set_where, set_worker = (
        setters
    )
    new = object.__new__

    def construct(
        seq: int,
        key: str,
        start: str,
        finish: str,
        recommendations: dict[str, str],
        stimulus_id: str,
        timestamp: float,
        where: str,
        worker: str | None,
    ) -> TransitionRecord:
        rec = new(TransitionRecord)
        set_seq(rec, seq)
        set_key(rec, key)
        set_start(rec, start)
        set_finish(rec, finish)
        set_recs(rec, recommendations)
        set_stim(rec, stimulus_id)
        set_ts(rec, timestamp)
        set_where(rec, where)
        set_worker(rec, worker)
        return rec

    return construct


_new_record = _fast_constructor()

_Index = defaultdict[str, list[int]]
_NO_ENTRY: TransitionEntry = (0, "", "", "", "", 0.0, "", None)  # fills the ring until it wraps


class TransitionLog:
    """The most recent ``maxlen`` transitions of one process, indexed by key and stimulus id."""

    __slots__ = (
        "_by_key",
        "_by_stimulus",
        "_last_slot",
        "_older_by_key",
        "_older_by_stimulus",
        "_recommendations",
        "_ring",
        "_seq",
        "maxlen",
        "sink",
        "total",
        "where",
    )

    def __init__(
        self,
        maxlen: int,
        where: str = "scheduler",
        *,
        seq: Iterator[int] | None = None,
        sink: TransitionSink | None = None,
    ) -> None:
        """``seq`` lets several logs (and the event ledger) of one Record share one counter;
        ``sink``, if given, receives every entry as it is appended (e.g. to queue it for disk)."""
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self.where = where
        self.sink = sink
        self.total = 0
        self._seq = seq if seq is not None else itertools.count(1)
        self._ring: list[TransitionEntry] = [_NO_ENTRY] * maxlen
        self._recommendations: list[dict[str, str]] = [{}] * maxlen
        self._last_slot = maxlen - 1
        # The current generation indexes the appends since the ring last wrapped, the older one
        # the ``maxlen`` appends before those: together they cover every entry still in the ring.
        self._by_key: _Index = defaultdict(list)
        self._by_stimulus: _Index = defaultdict(list)
        self._older_by_key: _Index = defaultdict(list)
        self._older_by_stimulus: _Index = defaultdict(list)

    def __len__(self) -> int:
        return min(self.total, self.maxlen)

    @property
    def _oldest_ordinal(self) -> int:
        return max(self.total - self.maxlen, 0)

    @property
    def oldest_seq(self) -> int | None:
        return self._ring[self._oldest_ordinal % self.maxlen][0] if self.total else None

    def append(
        self,
        key: str,
        start: str,
        finish: str,
        recommendations: dict[str, str],
        stimulus_id: str,
        timestamp: float,
        worker: str | None = None,
    ) -> TransitionEntry:
        """Log a transition, overwriting the oldest one when full.

        The log keeps ``recommendations`` itself, without a copy: the caller hands over a dict
        it will never change again (readers get copies, see ``TransitionRecord.from_entry``).
        """
        ordinal = self.total
        self.total = ordinal + 1
        entry = (next(self._seq), key, start, finish, stimulus_id, timestamp, self.where, worker)
        slot = ordinal % self.maxlen
        self._ring[slot] = entry
        self._recommendations[slot] = recommendations
        by_key = self._by_key
        by_key[key].append(ordinal)
        for recommended in recommendations:
            if recommended != key:
                by_key[recommended].append(ordinal)
        self._by_stimulus[stimulus_id].append(ordinal)
        if self.sink is not None:
            self.sink(entry, recommendations)
        if slot == self._last_slot:
            self._start_generation()
        return entry

    def _start_generation(self) -> None:
        """The ring has wrapped: every ordinal in the older generation is out of it now."""
        self._older_by_key, self._by_key = self._by_key, defaultdict(list)
        self._older_by_stimulus, self._by_stimulus = self._by_stimulus, defaultdict(list)

    def _filed_under(self, name: str) -> Iterator[list[int]]:
        """Per index, the ordinals of the live entries filed under ``name``, oldest first."""
        oldest = self._oldest_ordinal
        for older, current in (
            (self._older_by_key, self._by_key),
            (self._older_by_stimulus, self._by_stimulus),
        ):
            stale = older.get(name)
            if stale is not None and stale[-1] >= oldest:
                yield stale[bisect_left(stale, oldest) :] + current.get(name, [])
            elif name in current:
                yield current[name]

    def _story_slots(self, names: Iterable[str]) -> list[int]:
        """Ring slots of the live entries filed under any of ``names``, oldest first."""
        found = [ordinals for name in names for ordinals in self._filed_under(name)]
        ordinals = found[0] if len(found) == 1 else sorted({o for each in found for o in each})
        maxlen = self.maxlen
        return [ordinal % maxlen for ordinal in ordinals]

    def _live_slots(self) -> list[int]:
        maxlen = self.maxlen
        return [ordinal % maxlen for ordinal in range(self._oldest_ordinal, self.total)]

    def _record(self, slot: int) -> TransitionRecord:
        return TransitionRecord.from_entry(self._ring[slot], self._recommendations[slot])

    def story(self, *keys_or_stimulus_ids: str) -> list[TransitionRecord]:
        """Records whose key, recommendations or stimulus id name any argument; oldest first."""
        return [self._record(slot) for slot in self._story_slots(keys_or_stimulus_ids)]

    def query(
        self,
        keys: Iterable[str] | None = None,
        stimulus_id: str | None = None,
        start: str | None = None,
        finish: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[TransitionRecord]:
        """Records matching every given filter, oldest first.

        ``keys`` matches a record's own key; ``since`` is inclusive and ``until`` exclusive
        (timestamps); ``limit`` keeps the newest matching records. With ``keys`` or
        ``stimulus_id`` only the index buckets are read; otherwise the whole log is scanned.
        """
        key_set = None if keys is None else set(keys)
        if stimulus_id is not None:
            candidates = self._story_slots([stimulus_id])
        elif key_set is not None:
            candidates = self._story_slots(key_set)
        else:
            candidates = self._live_slots()
        ring = self._ring

        def matches(slot: int) -> bool:
            _, key, entry_start, entry_finish, entry_stimulus, timestamp, _, _ = ring[slot]
            return (
                (key_set is None or key in key_set)
                and (stimulus_id is None or entry_stimulus == stimulus_id)
                and (start is None or entry_start == start)
                and (finish is None or entry_finish == finish)
                and (since is None or timestamp >= since)
                and (until is None or timestamp < until)
            )

        found = [slot for slot in candidates if matches(slot)]
        if limit is not None:
            found = found[max(len(found) - limit, 0) :]
        return [self._record(slot) for slot in found]

    def __iter__(self) -> Iterator[TransitionRecord]:
        return map(self._record, self._live_slots())
