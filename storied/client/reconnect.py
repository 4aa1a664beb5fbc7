"""A client whose link to the scheduler drops gets it back, and says so on the record.

While it reconnects (status ``connecting``) calls wait for the link rather than fail, and
futures already finished answer from what the client holds. Back with the same scheduler,
every future carries on. Back with a new scheduler (the old one died and was restarted),
the futures held before are cancelled as Dask cancels them: their tasks died with the old one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from storied import config
from storied.comm.retry import retry_until
from storied.record import pack_event

if TYPE_CHECKING:
    from storied.client.client import Client

logger = logging.getLogger("storied.client")

#: the client takes work in these states: messages wait while it reconnects
USABLE = ("running", "connecting")
#: Dask's reason for futures cancelled because the scheduler was lost
LOST_REASON = "scheduler-connection-lost"
#: the ledger's action for a client that got its link back (topics "all" and the client id)
RECONNECT_ACTION = "reconnect-client"


def reconnect_timeout() -> float:
    return config.parse_timedelta(config.get("comm.reconnect-timeout")) or 0.0


async def reconnect(client: Client) -> bool:
    """Get the link back within ``comm.reconnect-timeout``, retrying whatever the failure.

    Whether it did; if not, the client is closed and its unfinished futures are cancelled.
    """
    assert client._stream is not None
    why = client._stream.comm.closed_reason or "connection closed"
    previous_scheduler = client.scheduler_id
    held = _held_keys(client)
    timeout = reconnect_timeout()
    client.status = "connecting"
    client._connected.clear()
    logger.warning(
        "Lost connection to scheduler %s: %s; reconnecting for up to %.0fs",
        client.scheduler_address,
        why,
        timeout,
    )
    lost_at = time.monotonic()
    try:
        _, attempts = await retry_until(
            client._connect,
            timeout,
            what=f"reconnect to {client.scheduler_address}",
            logger=logger,
            attempt_timeout=client._timeout,
            keep_trying=lambda: client.status == "connecting",
        )
    except Exception as exc:
        if client.status == "connecting":
            _give_up(client, f"could not reconnect within {timeout:.0f}s: {exc}")
        return False
    seconds = time.monotonic() - lost_at
    new_scheduler = client.scheduler_id != previous_scheduler
    cancelled = _cancel_held(client, held) if new_scheduler else 0
    if not new_scheduler:
        client._send({"op": "client-desires-keys", "keys": _held_keys(client)})
    logger.info(
        "Reconnected to %s after %.2fs and %d attempts%s",
        client.scheduler_address,
        seconds,
        attempts,
        f"; it is a new scheduler: {cancelled} futures cancelled" if new_scheduler else "",
    )
    topics, packed = pack_event(
        ["all", client.id],
        {
            "action": RECONNECT_ACTION,
            "client": client.id,
            "reason": why,
            "seconds": seconds,
            "attempts": attempts,
            "new-scheduler": new_scheduler,
            "cancelled": cancelled,
        },
    )
    client._send({"op": "log-event", "topic": topics, "packed": packed})
    client._flush_outbox()
    return True


def _held_keys(client: Client) -> list[str]:
    """The keys of the futures the client holds (users add some from their threads)."""
    with client._ref_lock:
        return list(client._states)


def _cancel_held(client: Client, keys: list[str]) -> int:
    """The new scheduler knows none of these futures: cancel them and forget their keys (a
    new submit of one starts afresh), as Dask does."""
    reason = (
        f"{LOST_REASON}: the client reconnected to a new scheduler at "
        f"{client.scheduler_address}, and the old one took this future's task with it; "
        "submit the work again"
    )
    with client._ref_lock:
        states = [state for key in keys if (state := client._states.pop(key, None)) is not None]
    for state in states:
        state.cancel(reason)
    return len(states)


def _give_up(client: Client, why: str) -> None:
    """The scheduler stayed out of reach: the client is closed, as in Dask, and its
    unfinished futures are cancelled; calls waiting for the link raise."""
    logger.error(
        "Giving up on scheduler %s: %s; the client is closed", client.scheduler_address, why
    )
    client.status = "closed"
    client._connection_lost = why
    with client._ref_lock:
        states = list(client._states.values())
    for state in states:
        if not state.done:
            state.cancel(f"{LOST_REASON}: {why}")
    client._connected.set()
