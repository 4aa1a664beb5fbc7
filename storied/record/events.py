"""Structured events: validation at the door and a bounded per-topic ledger in memory."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 256
_PLAIN_SCALARS = frozenset({type(None), bool, float, str, bytes})


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One structured event under one topic."""

    seq: int
    topic: str
    timestamp: float
    msg: Any
    source: str  # "scheduler", a worker address, or "client-<id>"


class _Unserializable(Exception):
    """Raised inside the checker; collects the path to the offending value on its way out."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _type_name(value: object) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _check_value(value: object, depth: int, open_containers: set[int]) -> None:
    cls = type(value)
    if cls in _PLAIN_SCALARS:
        return
    if cls is int or (isinstance(value, int) and not isinstance(value, bool)):
        if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
            raise _Unserializable(f"is an int outside the 64-bit range ({value})")
        return
    if cls is dict or cls is list or cls is tuple:
        if depth >= _MAX_DEPTH:
            raise _Unserializable(f"is nested deeper than {_MAX_DEPTH} levels")
        marker = id(value)
        if marker in open_containers:
            raise _Unserializable("contains itself (a self-referencing container)")
        open_containers.add(marker)
        if cls is dict:
            _check_dict(value, depth, open_containers)  # type: ignore[arg-type]
        else:
            _check_sequence(value, depth, open_containers)  # type: ignore[arg-type]
        open_containers.discard(marker)
        return
    if isinstance(value, (str, bytes, float)):
        return
    raise _Unserializable(f"is {_type_name(value)}")


def _check_dict(value: dict[Any, Any], depth: int, open_containers: set[int]) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            raise _Unserializable(f"has a key {key!r} of type {_type_name(key)}; keys must be str")
        try:
            _check_value(item, depth + 1, open_containers)
        except _Unserializable as error:
            error.path.append(f"[{key!r}]")
            raise


def _check_sequence(
    value: list[Any] | tuple[Any, ...], depth: int, open_containers: set[int]
) -> None:
    for position, item in enumerate(value):
        try:
            _check_value(item, depth + 1, open_containers)
        except _Unserializable as error:
            error.path.append(f"[{position}]")
            raise


def check_event(topic: object, msg: object) -> list[str]:
    """Validate a ``log_event`` call before it reaches any ledger; return the topics as a list.

    Messages travel over msgpack and are stored on disk, so anything msgpack cannot represent
    faithfully is refused here, at the caller, with the path to the offending value.
    """
    if isinstance(topic, str):
        topics = [topic]
    elif isinstance(topic, (list, tuple)) and topic and all(isinstance(t, str) for t in topic):
        topics = list(topic)
    else:
        raise TypeError(
            "event topic must be a str or a non-empty list/tuple of str, "
            f"got {_type_name(topic)}: {topic!r}"
        )
    try:
        _check_value(msg, 0, set())
    except _Unserializable as error:
        path = "msg" + "".join(reversed(error.path))
        raise TypeError(
            f"event message is not msgpack-serializable: {path} {error.problem}; convert it to a "
            "plain Python type (None, bool, int, float, str, bytes, list, tuple, dict with str "
            "keys)"
        ) from None
    return topics


class EventLedger:
    """The most recent ``maxlen_per_topic`` events of every topic, and how many ever arrived."""

    def __init__(self, maxlen_per_topic: int, *, seq: Iterator[int] | None = None) -> None:
        """``seq`` lets the event ledger share a sequence counter with transition logs."""
        if maxlen_per_topic < 1:
            raise ValueError(f"maxlen_per_topic must be at least 1, got {maxlen_per_topic}")
        self.maxlen_per_topic = maxlen_per_topic
        self._seq = seq if seq is not None else itertools.count(1)
        self._by_topic: dict[str, deque[EventRecord]] = {}
        self._counts: dict[str, int] = {}

    def add(
        self, topics: list[str], msg: Any, source: str, timestamp: float | None = None
    ) -> float:
        """Store ``msg`` as is under every topic; stamp it now unless a timestamp is given."""
        stamp = time.time() if timestamp is None else timestamp
        for topic in topics:
            self.append(topic, msg, source, stamp)
        return stamp

    def append(self, topic: str, msg: Any, source: str, timestamp: float) -> EventRecord:
        """Store one event under one topic, evicting the topic's oldest when full."""
        rec = EventRecord(next(self._seq), topic, timestamp, msg, source)
        events = self._by_topic.get(topic)
        if events is None:
            events = self._by_topic[topic] = deque(maxlen=self.maxlen_per_topic)
        events.append(rec)
        self._counts[topic] = self._counts.get(topic, 0) + 1
        return rec

    @overload
    def get(self, topic: str) -> tuple[tuple[float, Any], ...]: ...
    @overload
    def get(self, topic: None = None) -> dict[str, tuple[tuple[float, Any], ...]]: ...
    def get(
        self, topic: str | None = None
    ) -> tuple[tuple[float, Any], ...] | dict[str, tuple[tuple[float, Any], ...]]:
        """``(timestamp, msg)`` pairs oldest first, as ``Client.get_events`` returns them."""
        if topic is not None:
            return tuple((rec.timestamp, rec.msg) for rec in self._by_topic.get(topic, ()))
        return {name: self.get(name) for name, events in self._by_topic.items() if events}

    @overload
    def get_detail(self, topic: str) -> list[EventRecord]: ...
    @overload
    def get_detail(self, topic: None = None) -> dict[str, list[EventRecord]]: ...
    def get_detail(
        self, topic: str | None = None
    ) -> list[EventRecord] | dict[str, list[EventRecord]]:
        if topic is not None:
            return list(self._by_topic.get(topic, ()))
        return {name: list(events) for name, events in self._by_topic.items() if events}

    def oldest_seq(self, topic: str) -> int | None:
        events = self._by_topic.get(topic)
        return events[0].seq if events else None

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def topics(self) -> list[str]:
        return list(self._by_topic)
