"""Bounded, indexed in-memory log of task state transitions.

Every transition the scheduler (or a worker) makes lands here, several per task, so appending
must cost about a microsecond, a story lookup must never scan the log, and the log must not give
the garbage collector work: a scheduler keeps 100,000 transitions, and a collector walking a
few objects per transition would cost more than recording them.

So the log holds no per-transition container the collector tracks. Transitions live in
preallocated rings, one list per field group, indexed by slot (append number modulo ``maxlen``):
the ``TransitionEntry`` (a tuple of atomic values, which the collector stops tracking after its
first pass), the recommendations dict as the caller handed it over (str to str: never tracked),
and the links of the indexes. Each index (task key, counting keys named in recommendations; and
stimulus id) is a chain through the ring: a dict maps a name to the append number (*ordinal*) of
its newest entry, and each entry links to the previous entry under the same name. A story walks
a chain back until it reaches an ordinal that has fallen out of the ring; the ring needs no
eviction. Chain heads come in two generations of ``maxlen`` appends; when the ring wraps, the
older generation, all of whose entries have just fallen out, is dropped whole.
``TransitionRecord`` objects are built only when read, and the chains are linked only when
read too: appending fills a slot (under a microsecond), and the next story or query first links
what is new since the last one, skipping whatever fell out of the ring meanwhile. A process
makes far more transitions than it is asked stories, and a ring of 100,000 slots plus the
chains' dicts do not fit in a CPU cache, so linking at append time cost three times as much.

The ring doubles as the ledger's write queue: the ledger's writer thread reads new entries
straight out of it (``entries_after``), so appending costs the same with a ledger as without.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

#: ``(seq, key, start, finish, stimulus_id, timestamp, where, worker)``: a ``TransitionRecord``
#: but for its recommendations, which are kept beside it.
TransitionEntry = tuple[int, str, str, str, str, float, str, str | None]


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
        return new_record(
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


new_record = _fast_constructor()

_now = time.time  # bound once: appending runs several times per task
_NO_ENTRY: TransitionEntry = (0, "", "", "", "", 0.0, "", None)  # fills the ring until it wraps
_NO_RECOMMENDATIONS: dict[str, str] = {}
_NO_LINKS: dict[str, int] = {}
_END = 0  # the link of the first entry under a name (ordinals start at 1)


class TransitionLog:
    """The most recent ``maxlen`` transitions of one process, indexed by key and stimulus id.

    One thread (the process's event loop) appends and reads; the only reader allowed on another
    thread is ``entries_after``. Others go through the loop (``storied.loop.call_on_loop``).
    """

    __slots__ = (
        "_entries",
        "_indexed",
        "_key_heads",
        "_key_links",
        "_older_key_heads",
        "_older_stimulus_heads",
        "_recommendations",
        "_recommended_links",
        "_seq",
        "_stimulus_heads",
        "_stimulus_links",
        "maxlen",
        "reader_wake_at",
        "total",
        "wake_reader",
        "where",
    )

    def __init__(
        self,
        maxlen: int,
        where: str = "scheduler",
        *,
        seq: Iterator[int] | None = None,
    ) -> None:
        """``seq`` lets several logs (and the event ledger) of one Record share one counter."""
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self.where = where
        #: a reader of ``entries_after`` that wants waking when the ring fills up sets these;
        #: the first append that reaches ``reader_wake_at`` calls ``wake_reader`` once
        self.reader_wake_at = sys.maxsize
        self.wake_reader: Callable[[], object] | None = None
        self.total = 0  # also the ordinal of the newest entry
        self._indexed = 0  # the ordinal through which entries are linked into the chains
        self._seq = seq if seq is not None else itertools.count(1)
        self._entries: list[TransitionEntry] = [_NO_ENTRY] * maxlen
        self._recommendations: list[dict[str, str]] = [_NO_RECOMMENDATIONS] * maxlen
        # per slot, the ordinal of the previous entry under the same key, recommended key
        # (by name; for keys other than the entry's own) or stimulus id; _END if none
        self._key_links: list[int] = [_END] * maxlen
        self._recommended_links: list[dict[str, int]] = [_NO_LINKS] * maxlen
        self._stimulus_links: list[int] = [_END] * maxlen
        # name -> ordinal of its newest entry, for the appends since the ring last wrapped, and
        # for the ``maxlen`` appends before those: together they cover every entry in the ring
        self._key_heads: dict[str, int] = {}
        self._stimulus_heads: dict[str, int] = {}
        self._older_key_heads: dict[str, int] = {}
        self._older_stimulus_heads: dict[str, int] = {}

    def __len__(self) -> int:
        return min(self.total, self.maxlen)

    @property
    def _oldest_ordinal(self) -> int:
        return max(self.total - self.maxlen + 1, 1)

    @property
    def oldest_seq(self) -> int | None:
        return self._entries[self._oldest_ordinal % self.maxlen][0] if self.total else None

    def append(
        self,
        key: str,
        start: str,
        finish: str,
        recommendations: dict[str, str],
        stimulus_id: str,
        worker: str | None = None,
        timestamp: float | None = None,
    ) -> TransitionEntry:
        """Log a transition (made now, unless ``timestamp`` says when), overwriting the oldest.

        The log keeps ``recommendations`` itself, without a copy: the caller hands over a dict
        it will never change again (readers get copies, see ``TransitionRecord.from_entry``).
        Only one thread may append; ``total`` is published last, for ``entries_after``. Indexing
        waits for the next read (``_index_new_entries``): a process makes many more
        transitions than it tells stories, so appending only fills the slot.
        """
        ordinal = self.total + 1
        if timestamp is None:
            timestamp = _now()
        entry = (next(self._seq), key, start, finish, stimulus_id, timestamp, self.where, worker)
        slot = ordinal % self.maxlen
        self._entries[slot] = entry
        self._recommendations[slot] = recommendations
        self.total = ordinal
        if ordinal >= self.reader_wake_at and self.wake_reader is not None:
            self.reader_wake_at = sys.maxsize
            self.wake_reader()
        return entry

    def _index_new_entries(self) -> None:
        """Link the entries appended since the last read into the key and stimulus chains."""
        total, maxlen = self.total, self.maxlen
        first = max(self._indexed + 1, total - maxlen + 1)
        # generations that began among entries which fell out before they were indexed
        for _ in range(min((first - 1) // maxlen - self._indexed // maxlen, 2)):
            self._start_generation()
        entries, recommendations_ring = self._entries, self._recommendations
        key_links, recommended_links = self._key_links, self._recommended_links
        stimulus_links = self._stimulus_links
        for ordinal in range(first, total + 1):
            slot = ordinal % maxlen
            entry = entries[slot]
            key, stimulus_id = entry[1], entry[4]
            key_heads, older_key_heads = self._key_heads, self._older_key_heads
            key_links[slot] = key_heads.get(key) or older_key_heads.get(key, _END)
            key_heads[key] = ordinal
            links = _NO_LINKS
            for recommended in recommendations_ring[slot]:
                if recommended != key:
                    if links is _NO_LINKS:
                        links = {}
                    links[recommended] = key_heads.get(recommended) or older_key_heads.get(
                        recommended, _END
                    )
                    key_heads[recommended] = ordinal
            recommended_links[slot] = links
            stimulus_heads = self._stimulus_heads
            stimulus_links[slot] = stimulus_heads.get(stimulus_id) or (
                self._older_stimulus_heads.get(stimulus_id, _END)
            )
            stimulus_heads[stimulus_id] = ordinal
            if slot == 0:
                self._start_generation()
        self._indexed = total

    def entries_after(
        self, ordinal: int
    ) -> tuple[int, int, list[TransitionEntry], list[dict[str, str]]]:
        """The entries appended after ``ordinal``, for a reader on another thread (the ledger).

        Returns ``(newest, lost, entries, recommendations)``: pass ``newest`` next time; ``lost``
        counts entries the ring overwrote before they were read. No lock is needed: ``append``
        publishes ``total`` only after writing the slot, list slices are atomic, and slots that
        may have been overwritten while slicing (including the one being appended right now)
        are found afterwards and left out.
        """
        newest, maxlen = self.total, self.maxlen
        first = max(ordinal + 1, newest - maxlen + 1)
        if first > newest:
            return newest, 0, [], []
        start, stop = first % maxlen, newest % maxlen + 1
        if start < stop:
            entries = self._entries[start:stop]
            recommendations = self._recommendations[start:stop]
        else:
            entries = self._entries[start:] + self._entries[:stop]
            recommendations = self._recommendations[start:] + self._recommendations[:stop]
        overwritten = min(self.total + 2 - maxlen - first, len(entries))
        if overwritten > 0:
            del entries[:overwritten], recommendations[:overwritten]
            first += overwritten
        return newest, first - ordinal - 1, entries, recommendations

    def _start_generation(self) -> None:
        """The ring has wrapped: every entry the older heads lead to is out of it now."""
        self._older_key_heads, self._key_heads = self._key_heads, {}
        self._older_stimulus_heads, self._stimulus_heads = self._stimulus_heads, {}

    def _key_chain(self, name: str) -> list[int]:
        """Ordinals of the live entries whose key or recommendations name ``name``, newest first."""
        found: list[int] = []
        ordinal = self._key_heads.get(name) or self._older_key_heads.get(name, _END)
        oldest, maxlen, entries = self._oldest_ordinal, self.maxlen, self._entries
        while ordinal >= oldest:
            found.append(ordinal)
            slot = ordinal % maxlen
            if entries[slot][1] == name:
                ordinal = self._key_links[slot]
            else:
                ordinal = self._recommended_links[slot][name]
        return found

    def _stimulus_chain(self, name: str) -> list[int]:
        """Ordinals of the live entries caused by stimulus ``name``, newest first."""
        found: list[int] = []
        ordinal = self._stimulus_heads.get(name) or self._older_stimulus_heads.get(name, _END)
        oldest, maxlen, links = self._oldest_ordinal, self.maxlen, self._stimulus_links
        while ordinal >= oldest:
            found.append(ordinal)
            ordinal = links[ordinal % maxlen]
        return found

    def _slots(self, chains: Iterable[list[int]]) -> list[int]:
        """Ring slots of the entries in newest-first chains: oldest first, each once."""
        found = [chain for chain in chains if chain]
        if len(found) == 1:
            ordinals = found[0][::-1]
        else:
            ordinals = sorted({ordinal for chain in found for ordinal in chain})
        maxlen = self.maxlen
        return [ordinal % maxlen for ordinal in ordinals]

    def _live_slots(self) -> list[int]:
        maxlen = self.maxlen
        return [ordinal % maxlen for ordinal in range(self._oldest_ordinal, self.total + 1)]

    def _record(self, slot: int) -> TransitionRecord:
        return TransitionRecord.from_entry(self._entries[slot], self._recommendations[slot])

    def story(self, *keys_or_stimulus_ids: str) -> list[TransitionRecord]:
        """Records whose key, recommendations or stimulus id name any argument; oldest first."""
        self._index_new_entries()
        chains = [
            chain
            for name in keys_or_stimulus_ids
            for chain in (self._key_chain(name), self._stimulus_chain(name))
        ]
        return [self._record(slot) for slot in self._slots(chains)]

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
        ``stimulus_id`` only their chains are read; otherwise the whole log is scanned.
        """
        key_set = None if keys is None else set(keys)
        self._index_new_entries()
        if stimulus_id is not None:
            candidates = self._slots([self._stimulus_chain(stimulus_id)])
        elif key_set is not None:
            candidates = self._slots(self._key_chain(key) for key in key_set)
        else:
            candidates = self._live_slots()
        entries = self._entries

        def matches(slot: int) -> bool:
            _, key, entry_start, entry_finish, entry_stimulus, timestamp, _, _ = entries[slot]
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
