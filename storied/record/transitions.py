"""Bounded, indexed in-memory log of task state transitions.

Every transition the scheduler (or a worker) makes lands here, so appending must cost about a
microsecond and a story lookup must never scan the log. Two indexes (by task key, counting keys
named in recommendations, and by stimulus id) hold the records in sequence order; because the log
evicts its oldest record first, an evicted record is always at the front of every index bucket it
is in, which keeps eviction O(1) amortized.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any


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

    def as_tuple(self) -> tuple[str, str, str, dict[str, str], float]:
        """The 5-tuple that ``Scheduler.story`` returns, as dask users know it."""
        return (self.key, self.start, self.finish, self.recommendations, self.timestamp)

    def concerned_keys(self) -> Iterator[str]:
        """Its own key and every key it recommends, once each: what the per-key index holds."""
        yield self.key
        for recommended in self.recommendations:
            if recommended != self.key:
                yield recommended

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

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which
    costs about 1.5 us per record: the largest single cost of logging a transition. Setting the
    slots through their descriptors does the same thing faster and keeps the type frozen for
    everybody else.
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


class _Bucket:
    """The records of one index entry, oldest first, as a list with a moving head.

    A deque would do, but costs 760 bytes even when holding one record, and a busy scheduler has
    tens of thousands of live keys and stimulus ids; this costs about a tenth of that.
    """

    __slots__ = ("head", "items")

    def __init__(self, first: TransitionRecord) -> None:
        self.items = [first]
        self.head = 0

    def live(self) -> list[TransitionRecord]:
        return self.items[self.head :]


def _index_add(index: dict[str, _Bucket], name: str, rec: TransitionRecord) -> None:
    bucket = index.get(name)
    if bucket is None:
        index[name] = _Bucket(rec)
    else:
        bucket.items.append(rec)


def _index_drop_oldest(index: dict[str, _Bucket], name: str) -> None:
    """Forget the oldest record under ``name``: advance the head, compact now and then."""
    bucket = index[name]
    head = bucket.head + 1
    items = bucket.items
    if head == len(items):
        del index[name]
    elif head >= 16 and head * 2 >= len(items):
        del items[:head]
        bucket.head = 0
    else:
        bucket.head = head


class TransitionLog:
    """The most recent ``maxlen`` transitions of one process, indexed by key and stimulus id."""

    __slots__ = ("_by_key", "_by_stimulus", "_records", "_seq", "maxlen", "total", "where")

    def __init__(
        self, maxlen: int, where: str = "scheduler", *, seq: Iterator[int] | None = None
    ) -> None:
        """``seq`` lets several logs (and the event ledger) of one Record share one counter."""
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen}")
        self.maxlen = maxlen
        self.where = where
        self.total = 0
        self._seq = seq if seq is not None else itertools.count(1)
        self._records: deque[TransitionRecord] = deque()
        self._by_key: dict[str, _Bucket] = {}
        self._by_stimulus: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._records)

    @property
    def oldest_seq(self) -> int | None:
        return self._records[0].seq if self._records else None

    def append(
        self,
        key: str,
        start: str,
        finish: str,
        recommendations: dict[str, str],
        stimulus_id: str,
        timestamp: float,
        worker: str | None = None,
    ) -> TransitionRecord:
        """Log a transition, evicting the oldest one when full.

        The recommendations are copied: the index must match what the record says even if the
        caller reuses its dict.
        """
        rec = _new_record(
            next(self._seq),
            key,
            start,
            finish,
            dict(recommendations),
            stimulus_id,
            timestamp,
            self.where,
            worker,
        )
        by_key = self._by_key
        _index_add(by_key, key, rec)
        for recommended in recommendations:
            if recommended != key:
                _index_add(by_key, recommended, rec)
        _index_add(self._by_stimulus, stimulus_id, rec)
        self._records.append(rec)
        self.total += 1
        if len(self._records) > self.maxlen:
            self._evict_oldest()
        return rec

    def _evict_oldest(self) -> None:
        oldest = self._records.popleft()
        by_key = self._by_key
        key = oldest.key
        _index_drop_oldest(by_key, key)
        for recommended in oldest.recommendations:
            if recommended != key:
                _index_drop_oldest(by_key, recommended)
        _index_drop_oldest(self._by_stimulus, oldest.stimulus_id)

    def story(self, *keys_or_stimulus_ids: str) -> list[TransitionRecord]:
        """Records whose key, recommendations or stimulus id name any argument; oldest first."""
        buckets = [
            bucket
            for index in (self._by_key, self._by_stimulus)
            for name in keys_or_stimulus_ids
            if (bucket := index.get(name)) is not None
        ]
        if len(buckets) == 1:
            return buckets[0].live()
        unique = {rec.seq: rec for bucket in buckets for rec in bucket.live()}
        return [unique[seq] for seq in sorted(unique)]

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
        candidates: Iterable[TransitionRecord]
        if stimulus_id is not None:
            bucket = self._by_stimulus.get(stimulus_id)
            candidates = bucket.live() if bucket else ()
        elif key_set is not None:
            candidates = self.story(*key_set)
        else:
            candidates = self._records
        matches = [
            rec
            for rec in candidates
            if (key_set is None or rec.key in key_set)
            and (stimulus_id is None or rec.stimulus_id == stimulus_id)
            and (start is None or rec.start == start)
            and (finish is None or rec.finish == finish)
            and (since is None or rec.timestamp >= since)
            and (until is None or rec.timestamp < until)
        ]
        return matches if limit is None else matches[max(len(matches) - limit, 0) :]

    def __iter__(self) -> Iterator[TransitionRecord]:
        return iter(self._records)
