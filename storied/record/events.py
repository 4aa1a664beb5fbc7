"""Structured events: validation at the door and a bounded per-topic ledger in memory."""

from __future__ import annotations

import functools
import itertools
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple, overload

import msgpack

from storied import config

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 256
_PLAIN_SCALARS = frozenset({type(None), bool, float, str, bytes})


class EventRecord(NamedTuple):
    """One structured event under one topic (a tuple: the scheduler makes one per event)."""

    seq: int
    topic: str
    timestamp: float
    msg: Any
    source: str  # "scheduler", a worker address, or "client-<id>"


#: How the ledger keeps an event: ``(seq, timestamp, packed msg, source)``. Atomic values only,
#: so the garbage collector stops tracking it after its first pass: with 100,000 events per
#: topic kept as objects, every full collection would walk them all, again and again.
StoredEvent = tuple[int, float, bytes, str]


def pack_msg(msg: Any) -> bytes:
    """msgpack; anything that bypassed ``check_event`` is stored as its repr."""
    return msgpack.packb(msg, default=repr)


def unpack_msg(packed: bytes) -> Any:
    return msgpack.unpackb(packed, strict_map_key=False)


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
    topics = check_topics(topic)
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


class EventTooLarge(ValueError):
    """An event message larger than ``events.max-event-size``; it was not logged."""


#: sizes as config holds them ("1MiB") parsed once: every event is checked against one
_parsed_size = functools.lru_cache(maxsize=16)(config.parse_bytes)


def configured_max_event_size() -> int:
    return _parsed_size(config.get("events.max-event-size"))


def check_event_size(packed: bytes, limit: int) -> None:
    if len(packed) > limit:
        raise EventTooLarge(
            f"an event message of {len(packed)} bytes (packed) exceeds events.max-event-size "
            f"({limit} bytes) and was not logged: log a summary, and keep large data in a "
            "file or a dataset (client.publish_dataset), or raise events.max-event-size "
            "(docs/configuration.md)"
        )


def fit_event(msg: dict[str, Any], limit: int) -> dict[str, Any]:
    """``msg`` (a dict storied logs about itself) with its largest fields replaced by what
    they were (``"<12000 items omitted: over events.max-event-size>"``) until it fits
    ``limit``: a lost-task list or a traceback too large to keep must not fail the scheduler."""
    fitted = dict(msg)
    sizes = {name: len(pack_msg(value)) for name, value in fitted.items()}
    while len(pack_msg(fitted)) > limit and sizes:
        name = max(sizes, key=sizes.__getitem__)
        del sizes[name]
        value = fitted[name]
        what = "characters" if isinstance(value, str | bytes) else "items"
        count = len(value) if isinstance(value, str | bytes | list | tuple | dict) else 1
        fitted[name] = f"<{count} {what} omitted: over events.max-event-size>"
    return fitted


def pack_event(topic: object, msg: object) -> tuple[list[str], bytes]:
    """Check a ``log_event`` call at its caller and pack its message: ``(topics, packed)``.

    msgpack's C packer does the checking, and unpacking with ``strict_map_key`` refuses keys
    other than str (and bytes); only a message they refuse takes the slow walk of
    ``check_event``, to name the offending value and where it sits. The packed bytes are also
    the copy that later changes to ``msg`` cannot reach. A message over
    ``events.max-event-size`` raises ``EventTooLarge``.
    """
    topics = check_topics(topic)
    try:
        packed = msgpack.packb(msg)
        msgpack.unpackb(packed, strict_map_key=True)
    except Exception as exc:
        check_event(topics, msg)
        raise TypeError(f"event message is not msgpack-serializable: {exc}") from None
    check_event_size(packed, configured_max_event_size())
    return topics, packed


def check_topics(topic: object) -> list[str]:
    """A ``log_event`` topic as a list of str; ``TypeError`` unless it is a str or such a list."""
    if type(topic) is list and len(topic) == 1 and type(topic[0]) is str:
        return [topic[0]]  # the common case; a new list, so the caller's may change later
    if isinstance(topic, str):
        return [topic]
    if isinstance(topic, (list, tuple)) and topic and all(isinstance(t, str) for t in topic):
        return list(topic)
    raise TypeError(
        "event topic must be a str or a non-empty list/tuple of str, "
        f"got {_type_name(topic)}: {topic!r}"
    )


def record_of(topic: str, stored: StoredEvent) -> EventRecord:
    """The ``EventRecord`` of a stored event, its message unpacked."""
    seq, timestamp, packed, source = stored
    return EventRecord(seq, topic, timestamp, unpack_msg(packed), source)


def _record_seq(record: EventRecord) -> int:
    return record.seq


class EventLedger:
    """The most recent events of every topic, at most ``maxlen_per_topic`` of them and at most
    ``max_bytes_per_topic`` bytes of packed messages (the newest is always kept), and how many
    ever arrived."""

    def __init__(
        self,
        maxlen_per_topic: int,
        *,
        seq: Iterator[int] | None = None,
        max_bytes_per_topic: int | None = None,
    ) -> None:
        """``seq`` lets the event ledger share a sequence counter with transition logs."""
        if maxlen_per_topic < 1:
            raise ValueError(f"maxlen_per_topic must be at least 1, got {maxlen_per_topic}")
        self.maxlen_per_topic = maxlen_per_topic
        self.max_bytes_per_topic = max_bytes_per_topic
        self._seq = seq if seq is not None else itertools.count(1)
        self._by_topic: dict[str, deque[StoredEvent]] = {}
        self._counts: dict[str, int] = {}
        self._bytes: dict[str, int] = {}

    def add(
        self, topics: list[str], msg: Any, source: str, timestamp: float | None = None
    ) -> float:
        """Store ``msg`` under every topic; stamp it now unless a timestamp is given."""
        stamp = time.time() if timestamp is None else timestamp
        packed = pack_msg(msg)
        for topic in topics:
            self.append(topic, packed, source, stamp)
        return stamp

    def append(self, topic: str, packed: bytes, source: str, timestamp: float) -> StoredEvent:
        """Store one packed event under one topic, evicting the topic's oldest when full."""
        stored = (next(self._seq), timestamp, packed, source)
        events = self._by_topic.get(topic)
        if events is None:
            events = self._by_topic[topic] = deque(maxlen=self.maxlen_per_topic)
        size = self._bytes.get(topic, 0) + len(packed)
        if len(events) == self.maxlen_per_topic:
            size -= len(events[0][2])  # the deque drops it on append
        events.append(stored)
        if self.max_bytes_per_topic is not None:
            while size > self.max_bytes_per_topic and len(events) > 1:
                size -= len(events.popleft()[2])
        self._bytes[topic] = size
        self._counts[topic] = self._counts.get(topic, 0) + 1
        return stored

    def page(
        self,
        topic: str,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1_000,
        max_bytes: int | None = None,
    ) -> tuple[list[EventRecord], bool]:
        """The newest events of ``topic`` below ``before_seq`` within ``[since, until)``,
        oldest first: at most ``limit`` of them and (but always one, if any) ``max_bytes`` of
        packed messages; and whether every older event in memory was looked at (the page may
        go on in a ledger). Reads from the newest end, so it holds the page alone."""
        found: list[EventRecord] = []
        size = 0
        for stored in reversed(self._by_topic.get(topic, ())):
            seq, timestamp, packed, _ = stored
            if (
                (before_seq is not None and seq >= before_seq)
                or (since is not None and timestamp < since)
                or (until is not None and timestamp >= until)
            ):
                continue
            size += len(packed)
            if len(found) >= limit or (found and max_bytes is not None and size > max_bytes):
                found.reverse()
                return found, False
            found.append(record_of(topic, stored))
        found.reverse()
        return found, True

    def bytes_of(self, topic: str) -> int:
        """Bytes of packed messages ``topic`` holds in memory."""
        return self._bytes.get(topic, 0)

    @overload
    def get(self, topic: str) -> tuple[tuple[float, Any], ...]: ...
    @overload
    def get(self, topic: None = None) -> dict[str, tuple[tuple[float, Any], ...]]: ...
    def get(
        self, topic: str | None = None
    ) -> tuple[tuple[float, Any], ...] | dict[str, tuple[tuple[float, Any], ...]]:
        """``(timestamp, msg)`` pairs oldest first, as ``Client.get_events`` returns them."""
        if topic is not None:
            return tuple(
                (timestamp, unpack_msg(packed))
                for _, timestamp, packed, _ in self._by_topic.get(topic, ())
            )
        return {name: self.get(name) for name, events in self._by_topic.items() if events}

    @overload
    def get_detail(self, topic: str) -> list[EventRecord]: ...
    @overload
    def get_detail(self, topic: None = None) -> dict[str, list[EventRecord]]: ...
    def get_detail(
        self, topic: str | None = None
    ) -> list[EventRecord] | dict[str, list[EventRecord]]:
        if topic is not None:
            return [record_of(topic, stored) for stored in self._by_topic.get(topic, ())]
        return {name: self.get_detail(name) for name, events in self._by_topic.items() if events}

    def after(self, seq: int, topic: str | None = None) -> list[EventRecord]:
        """Events with a seq above ``seq`` (of ``topic``, or of all), oldest first.

        Each topic is read from its newest end, so a tail that polls pays for what is new only.
        """
        found = []
        for name in [topic] if topic is not None else list(self._by_topic):
            for stored in reversed(self._by_topic.get(name, ())):
                if stored[0] <= seq:
                    break
                found.append(record_of(name, stored))
        found.sort(key=_record_seq)
        return found

    def oldest_seq(self, topic: str) -> int | None:
        events = self._by_topic.get(topic)
        return events[0][0] if events else None

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def topics(self) -> list[str]:
        return list(self._by_topic)
