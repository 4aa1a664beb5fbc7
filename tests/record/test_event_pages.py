"""Events capped in bytes as well as count per topic, refused over a size, and read in pages:
the pure parts (``EventLedger``, ``Record`` with and without a ledger)."""

from __future__ import annotations

import pytest

from storied import config
from storied.record import EventLedger, Record
from storied.record.events import EventTooLarge, pack_event, pack_msg
from storied.record.ledger import Ledger


def _fill(events: EventLedger, topic: str, n: int, size: int, t0: float = 1000.0) -> None:
    """``n`` events whose packed messages are ``size`` bytes, one a second from ``t0``."""
    for i in range(n):
        packed = pack_msg("x" * (size - 3))  # str8/str16 header: 2-3 bytes
        assert abs(len(packed) - size) <= 1
        events.append(topic, packed, "test", t0 + i)


def _read_all(read_page, limit: int, **window) -> list:
    """Every event through pages of ``limit``, as a client does: newest page first."""
    pages, before = [], None
    while True:
        page = read_page(before_seq=before, limit=limit, **window)
        if not page:
            return [rec for page in reversed(pages) for rec in page]
        pages.append(page)
        before = page[0].seq


def test_the_byte_cap_evicts_the_oldest_and_keeps_counting():
    events = EventLedger(1_000, max_bytes_per_topic=1_000)
    _fill(events, "t", 50, 100)
    kept = events.get_detail("t")
    assert len(kept) == 10
    assert [rec.timestamp for rec in kept] == [1040.0 + i for i in range(10)]
    assert events.bytes_of("t") == sum(len(pack_msg(rec.msg)) for rec in kept) <= 1_000
    assert events.counts()["t"] == 50


def test_the_newest_event_is_kept_even_over_the_byte_cap():
    events = EventLedger(10, max_bytes_per_topic=100)
    _fill(events, "t", 3, 50)
    events.append("t", pack_msg("y" * 500), "test", 2000.0)
    assert [rec.msg for rec in events.get_detail("t")] == ["y" * 500]


def test_bytes_stay_right_when_the_count_cap_evicts():
    events = EventLedger(5, max_bytes_per_topic=10_000)
    _fill(events, "t", 20, 100)
    assert len(events.get_detail("t")) == 5
    assert abs(events.bytes_of("t") - 500) <= 5
    _fill(events, "t", 200, 100)  # the byte cap would allow 100: the count cap holds
    assert len(events.get_detail("t")) == 5


def test_pages_walk_a_topic_newest_first_bounded_in_count_and_bytes():
    events = EventLedger(10_000)
    _fill(events, "t", 1_000, 100)
    _fill(events, "other", 10, 100)
    everything = events.get_detail("t")

    def page(**kwargs):
        return events.page("t", **kwargs)[0]

    assert _read_all(page, limit=64) == everything
    first, exhausted = events.page("t", limit=64)
    assert first == everything[-64:] and not exhausted
    by_bytes, exhausted = events.page("t", limit=64, max_bytes=1_000)
    assert by_bytes == everything[-10:] and not exhausted
    one, _ = events.page("t", limit=64, max_bytes=10)  # always at least one
    assert one == everything[-1:]
    window = _read_all(page, limit=7, since=1100.0, until=1200.0)
    assert [rec.timestamp for rec in window] == [1100.0 + i for i in range(100)]
    assert events.page("t", before_seq=everything[0].seq) == ([], True)
    assert events.page("unknown") == ([], True)


def test_record_pages_go_on_from_memory_into_the_ledger(tmp_path):
    """Memory keeps the newest (capped in bytes); the ledger keeps all; pages read both."""
    ledger = Ledger(tmp_path / "history.db", flush_interval=0.01)
    record = Record(events_per_topic=1_000, event_bytes_per_topic=20 * 100, ledger=ledger)
    try:
        for i in range(500):
            record.event(["t"], "m" * 95 + f"{i:03d}", "test", timestamp=1000.0 + i)  # 100 B packed
        in_memory = record._events.get_detail("t")
        assert len(in_memory) == 20  # the byte cap, well below the count cap
        read = _read_all(lambda **kw: record.events_page("t", **kw), limit=64)
        assert [rec.timestamp for rec in read] == [1000.0 + i for i in range(500)]
        assert read == record.events("t", detail=True)
        limited = record.events_page("t", limit=30)
        assert [rec.timestamp for rec in limited] == [1470.0 + i for i in range(30)]
        window = _read_all(
            lambda **kw: record.events_page("t", **kw), limit=16, since=1100.0, until=1490.0
        )
        assert [rec.timestamp for rec in window] == [1100.0 + i for i in range(390)]
        assert record.event_topics() == ["t"]
    finally:
        record.close()


def test_an_event_over_the_size_limit_is_refused_at_the_caller():
    with config.set({"events.max-event-size": "1kB"}):
        pack_event("t", "x" * 900)
        with pytest.raises(EventTooLarge, match=r"exceeds events.max-event-size \(1000 bytes\)"):
            pack_event("t", "x" * 1_000)
    assert issubclass(EventTooLarge, ValueError)
