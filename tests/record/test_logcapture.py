from __future__ import annotations

import logging

import pytest

from storied.record.logcapture import LogCapture, LogRecordEntry


@pytest.fixture
def captured_logger():
    logger = logging.getLogger("storied.test.capture")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    seen: list[LogRecordEntry] = []
    handler = LogCapture(3, "scheduler", on_record=seen.append)
    logger.addHandler(handler)
    yield logger, handler, seen
    logger.removeHandler(handler)


def test_get_is_newest_first_and_bounded(captured_logger):
    logger, handler, _ = captured_logger
    for number in range(5):
        logger.info("message %d", number)
    logger.warning("last")
    pairs = handler.get()
    assert [level for level, _ in pairs] == ["WARNING", "INFO", "INFO"]
    assert pairs[0][1].endswith("storied.test.capture - WARNING - last")
    assert pairs[1][1].endswith("message 4")
    assert handler.get(1) == pairs[:1]


def test_entries_and_callback_carry_plain_data_with_tracebacks(captured_logger):
    logger, handler, seen = captured_logger
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed %s", "task")
    (entry,) = handler.entries()
    assert seen == [entry]
    assert entry.level == "ERROR" and entry.levelno == logging.ERROR
    assert entry.logger == "storied.test.capture" and entry.where == "scheduler"
    assert entry.message.startswith("failed task\nTraceback")
    assert "ValueError: boom" in entry.message
