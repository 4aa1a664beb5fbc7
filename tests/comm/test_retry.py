"""``retry_until``: another attempt after any failure, with growing pauses, until the deadline."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from storied.comm import CommClosedError
from storied.comm.retry import FIRST_BACKOFF, MAX_BACKOFF, retry_until
from storied.protocol.handshake import AuthenticationError

logger = logging.getLogger("storied.test")


class Flaky:
    """Fails with each of ``failures`` in turn, then returns "up"; notes when it was called."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.called_at: list[float] = []
        self.given: list[float] = []

    async def __call__(self, seconds: float) -> str:
        self.called_at.append(time.monotonic())
        self.given.append(seconds)
        if self.failures:
            raise self.failures.pop(0)
        return "up"


def test_any_failure_is_retried_with_growing_pauses(caplog):
    flaky = Flaky(
        ConnectionRefusedError("refused"),
        ConnectionResetError("reset by peer"),
        CommClosedError("closed during the handshake"),
        TimeoutError("no reply"),
        EOFError("half a message"),
    )
    with caplog.at_level(logging.INFO, "storied.test"):
        result = asyncio.run(
            retry_until(flaky, 30, what="reach it", logger=logger, attempt_timeout=5)
        )
    assert result == ("up", 6)
    pauses = [b - a for a, b in zip(flaky.called_at, flaky.called_at[1:], strict=False)]
    expected = [min(FIRST_BACKOFF * 2**i, MAX_BACKOFF) for i in range(5)]
    assert all(p >= e * 0.9 for p, e in zip(pauses, expected, strict=True)), pauses
    assert pauses[-1] > pauses[0]
    assert max(flaky.given) <= 5, "no attempt gets more than attempt_timeout"
    assert "Attempt 3 to reach it failed (CommClosedError: closed during the handshake)" in (
        caplog.text
    )


def test_it_gives_up_with_the_last_failure_once_time_is_up():
    flaky = Flaky(*(ConnectionRefusedError(f"refused {i}") for i in range(1000)))
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match="refused"):
        asyncio.run(retry_until(flaky, 0.5, what="reach it", logger=logger, attempt_timeout=5))
    assert 0.5 <= time.monotonic() - started < 2
    assert len(flaky.called_at) > 2


def test_a_refused_token_and_a_stop_are_final():
    flaky = Flaky(AuthenticationError("wrong token"))
    with pytest.raises(AuthenticationError):
        asyncio.run(retry_until(flaky, 30, what="reach it", logger=logger, attempt_timeout=5))
    assert len(flaky.called_at) == 1

    flaky = Flaky(ConnectionResetError("reset"), ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        asyncio.run(
            retry_until(
                flaky,
                30,
                what="reach it",
                logger=logger,
                attempt_timeout=5,
                keep_trying=lambda: False,
            )
        )
    assert len(flaky.called_at) == 1
