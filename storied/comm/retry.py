"""Reaching a peer again after the link dropped: retry with backoff until a deadline.

A scheduler that restarts refuses connections, then accepts them before it serves them, so an
attempt can fail in many ways (refused, reset, closed during the handshake, a timeout): each is
worth another try while time is left. Only a failed authentication is final, since trying
again cannot change the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from storied.protocol.handshake import AuthenticationError

T = TypeVar("T")

#: the pause after the first failed attempt; it doubles after each one, up to the maximum
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0


async def retry_until(
    attempt: Callable[[float], Awaitable[T]],
    timeout: float,
    *,
    what: str,
    logger: logging.Logger,
    attempt_timeout: float,
    keep_trying: Callable[[], bool] = lambda: True,
) -> tuple[T, int]:
    """``attempt(seconds)`` until it succeeds, for ``timeout`` seconds in all: its result and
    how many attempts it took. Each attempt gets at most ``attempt_timeout`` seconds. Raises the
    last failure once time is up or ``keep_trying()`` turns false, and an authentication
    failure at once. Each failed attempt is logged (``what`` names the goal)."""
    deadline = time.monotonic() + timeout
    backoff = FIRST_BACKOFF
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        try:
            return await attempt(max(min(remaining, attempt_timeout), 0.1)), attempts
        except AuthenticationError:
            raise
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not keep_trying():
                raise
            pause = min(backoff, remaining)
            logger.info(
                "Attempt %d to %s failed (%s: %s); retrying in %.2fs, %.0fs left",
                attempts,
                what,
                type(exc).__name__,
                exc,
                pause,
                remaining,
            )
            await asyncio.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF)
