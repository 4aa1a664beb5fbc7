"""How far behind its workers' reports the scheduler runs (``storied.scheduler.lag``)."""

from __future__ import annotations

import pytest

from storied.scheduler.lag import MAX_LAG, WINDOW, ReportLag

W1, W2 = "tcp://w1", "tcp://w2"


def test_no_reports_no_lag():
    assert ReportLag().seconds == 0.0


def test_a_delay_counts_from_the_quickest_report_of_its_worker():
    lag = ReportLag()
    lag.note(W1, finished=100.0, now=100.001)
    assert lag.seconds == 0.0, "the first report is the quickest so far"
    lag.note(W1, finished=100.010, now=100.071)
    assert lag.seconds == pytest.approx(0.06)


def test_a_workers_clock_offset_drops_out():
    """A worker whose clock runs 5 s behind the scheduler's is not 5 s late."""
    lag = ReportLag()
    for i in range(10):
        lag.note(W1, finished=95.0 + i / 100, now=100.0 + i / 100 + 0.001)
    lag.note(W2, finished=200.0, now=100.2)  # 100 s ahead
    lag.note(W2, finished=200.1, now=100.3)
    assert lag.seconds == pytest.approx(0.0, abs=1e-9)
    lag.note(W1, finished=95.2, now=100.25)  # 49 ms later than its quickest
    assert lag.seconds == pytest.approx(0.049)


def test_the_longest_delay_is_remembered_for_a_window_or_two_then_forgotten():
    lag = ReportLag()
    lag.note(W1, finished=10.0, now=10.0)
    lag.note(W1, finished=10.0, now=10.08)
    assert lag.seconds == pytest.approx(0.08)
    lag.note(W1, finished=10.0 + WINDOW, now=10.0 + WINDOW + 0.01)  # a new window
    assert lag.seconds == pytest.approx(0.08), "the window before still counts"
    lag.note(W1, finished=10.0 + 2 * WINDOW, now=10.0 + 2 * WINDOW + 0.02)
    assert lag.seconds == pytest.approx(0.02)
    lag.note(W1, finished=10.0 + 5 * WINDOW, now=10.0 + 5 * WINDOW + 0.005)
    assert lag.seconds == pytest.approx(0.005), "windows with no report between are over"


def test_the_lag_counted_is_capped():
    lag = ReportLag()
    lag.note(W1, finished=0.0, now=0.0)
    lag.note(W1, finished=0.0, now=30.0)
    assert lag.seconds == MAX_LAG


def test_a_worker_that_left_starts_afresh():
    """An address that comes back may be another process with another clock."""
    lag = ReportLag()
    lag.note(W1, finished=100.0, now=100.0)
    lag.forget(W1)
    lag.note(W1, finished=50.0, now=100.0)  # this clock runs 50 s behind
    assert lag.seconds == 0.0
