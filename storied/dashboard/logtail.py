"""The logs page's live tail: new log records of the scheduler and its workers, pushed.

Nothing polls the workers. A worker ships each log record to the scheduler as it is captured,
in the batches it sends anyway (``worker-records``): always to a scheduler with a ledger, which
keeps them; and to any scheduler while at least one logs tail is open, switched on and off by
a ``ship-logs`` request (``LiveLogFeed.watch``). The scheduler keeps the newest of them in
memory (``Record.remote_logs_after``) beside its own captured records
(``LogCapture.entries_after``); a tail holds two counts as its cursor, so an open page costs
no memory beyond them and what it has yet to send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storied.record.logcapture import LogRecordEntry

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.dashboard")


@dataclass(frozen=True)
class LogCursor:
    """Where a tail has read to: records the scheduler captured, records workers shipped."""

    captured: int
    shipped: int


class LiveLogFeed:
    """New log records of a running scheduler and its workers, for any number of tails."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        #: open tails: workers ship their records while there is one
        self.watchers = 0
        #: the worker links told to ship, by address (a reconnected worker is a new link)
        self._told: dict[str, Any] = {}

    def cursor(self) -> LogCursor:
        """Now: a tail opened with it sends records captured or shipped from here on."""
        record = self.scheduler.record
        return LogCursor(record.log_handler().captured, record.remote_logs_received)

    async def watch(self) -> None:
        """One more open tail: once this returns, every worker ships its records (so the tail
        misses none logged after it opened)."""
        self.watchers += 1
        logger.debug("Logs tail opened (%d open)", self.watchers)
        if self.watchers == 1 and not self.scheduler.record.durable:
            logger.info("A logs tail is open: workers ship their log records here while one is")
        await self._tell_new_workers()

    async def unwatch(self) -> None:
        """One tail fewer; the last switches the workers' shipping back to what it was."""
        self.watchers -= 1
        logger.debug("Logs tail closed (%d open)", self.watchers)
        if self.watchers == 0:
            if not self.scheduler.record.durable:
                logger.info("No logs tail is open: workers stop shipping their log records")
            told = [link for link in self._told.values() if not link.stream.closed]
            self._told.clear()
            await self.scheduler._ask_workers(told, "ship-logs", ship=False)

    async def new(self, since: LogCursor) -> tuple[list[LogRecordEntry], LogCursor]:
        """Records after ``since``, oldest first, and the cursor after them; first tells the
        workers that joined (or came back) since the last look to ship theirs."""
        await self._tell_new_workers()
        record = self.scheduler.record
        own, captured = record.log_handler().entries_after(since.captured)
        shipped, received = record.remote_logs_after(since.shipped)
        found = sorted([*own, *shipped], key=_by_time)
        return found, LogCursor(captured, received)

    async def _tell_new_workers(self) -> None:
        links = self.scheduler.workers
        untold = [link for addr, link in links.items() if self._told.get(addr) is not link]
        for gone in self._told.keys() - links.keys():
            del self._told[gone]
        if not untold:
            return
        for link in untold:
            self._told[link.address] = link
        replies = await self.scheduler._ask_workers(untold, "ship-logs", ship=True)
        for link, reply in zip(untold, replies, strict=True):
            if isinstance(reply, BaseException):
                logger.info("Could not ask %s to ship its logs: %r", link.address, reply)


def _by_time(entry: LogRecordEntry) -> float:
    return entry.timestamp
