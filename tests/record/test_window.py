"""The one parser of time windows the CLI and the dashboard's API share."""

from __future__ import annotations

import datetime

import pytest

from storied.record.window import BadTime, parse_time, parse_window, within

UTC = datetime.UTC
NOON = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{NOON:.0f}", NOON),
        (f" {NOON + 0.25} ", NOON + 0.25),
        ("2026-12-01T12:00:00Z", NOON),
        ("2026-12-01T13:00:00+01:00", NOON),
        ("2026-12-01 12:00:00.250", NOON + 0.25),  # as the dashboard shows a time (UTC)
        ("2026-12-01", NOON - 12 * 3600),
    ],
)
def test_epoch_seconds_and_iso_8601_are_times(text: str, expected: float) -> None:
    assert parse_time("since", text, UTC) == expected


def test_a_time_without_a_zone_is_in_the_readers_zone() -> None:
    """UTC for the dashboard (it shows UTC), local time for the CLI (it prints local time)."""
    assert parse_time("since", "2026-12-01T12:00", UTC) == NOON
    local = datetime.datetime(2026, 12, 1, 12, 0).timestamp()
    assert parse_time("since", "2026-12-01T12:00") == local
    assert parse_time("since", "2026-12-01T12:00Z") == NOON  # a zone given wins


@pytest.mark.parametrize("text", [None, "", "  "])
def test_no_bound(text: str | None) -> None:
    assert parse_time("until", text) is None


@pytest.mark.parametrize("text", ["yesterday", "12/01/2026", "nan", "inf", "-inf", "2026-13-01"])
def test_what_is_not_a_time_is_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(BadTime) as refused:
        parse_time("until", text)
    assert refused.value.parameter == "until"
    message = str(refused.value)
    assert message.startswith(f"until={text!r}") and "seconds since the epoch" in message
    assert "ISO 8601" in refused.value.accepted


def test_a_time_local_time_cannot_place_is_refused() -> None:
    """The CLI reads a time without a zone in local time, which has no offset for year 1."""
    assert parse_time("since", "0001-01-01", UTC) == -62135596800.0
    with pytest.raises(BadTime) as refused:
        parse_time("since", "0001-01-01")
    assert refused.value.parameter == "since" and "out of the range" in str(refused.value)


def test_a_window_ending_before_it_starts_is_refused() -> None:
    assert parse_window("10", "20") == (10.0, 20.0)
    assert parse_window("10", "10") == (10.0, 10.0)  # empty, but as asked
    assert parse_window(None, "20") == (None, 20.0)
    with pytest.raises(BadTime) as refused:
        parse_window("2026-12-01T12:00Z", "1000")
    assert refused.value.parameter == "until" and "before since" in str(refused.value)
    with pytest.raises(BadTime) as refused:
        parse_window("soon", "1000")
    assert refused.value.parameter == "since"


def test_within_is_half_open() -> None:
    assert within(10.0, 10.0, 20.0) and not within(20.0, 10.0, 20.0)
    assert within(5.0, None, None) and not within(5.0, 6.0, None) and within(5.0, None, 6.0)
