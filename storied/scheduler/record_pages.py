"""Reads of the record in pages of bounded size, for clients (``Client.get_events``,
``Client.story``).

A whole topic can hold more events than fit in memory twice (the ledger keeps every run's),
so a client asks for one page at a time, newest first, each below the oldest seq of the last:
whatever the topic's size, the scheduler holds one page per read (``events.page-size``
records, ``events.page-bytes`` of the part in memory), and the client puts them together.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from storied import config

if TYPE_CHECKING:
    from storied.record import EventRecord
    from storied.scheduler.server import Scheduler


class RecordPages:
    """The scheduler extension answering ``event-topics`` and ``events-page``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "event-topics": self._event_topics,
            "events-page": self._events_page,
            "story-page": self._story_page,
        }

    def remove_client(self, client: str) -> None:
        return None

    def remove_worker(self, address: str) -> None:
        return None

    async def _event_topics(self, client: str) -> list[str]:
        record = self.scheduler.record
        return await self.scheduler._off_loop(record.event_topics)

    async def _events_page(
        self,
        client: str,
        topic: str,
        before_seq: int | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        run: int | str = "current",
    ) -> list[list[Any]]:
        """``[seq, timestamp, msg, source]`` oldest first; at most ``events.page-size``;
        ``run``: "current", "all" (every run on the ledger file) or a run id."""
        page_size = int(config.get("events.page-size"))
        records: list[EventRecord] = await self.scheduler._off_loop(
            self.scheduler.record.events_page,
            topic,
            before_seq,
            since,
            until,
            page_size if limit is None else max(0, min(limit, page_size)),
            config.parse_bytes(config.get("events.page-bytes")),
            run,
        )
        return [[r.seq, r.timestamp, r.msg, r.source] for r in records]

    async def _story_page(
        self,
        client: str,
        keys: list[str],
        on_error: str = "raise",
        before_seq: int | None = None,
        limit: int | None = None,
        run: int | str = "current",
    ) -> dict[str, Any]:
        """``{"entries": [...], "before_seq": where the next page starts, or None: the end}``.

        With a ledger, the workers ship their transitions to it (on the first page) and the
        story is read from it in pages of at most ``events.page-size`` records. Without one,
        the story is in the memory of the scheduler and each worker, bounded by their
        transition logs, and comes whole in one page. Each entry carries its run and the
        failure that caused it, if any (``Record.explain``)."""
        scheduler = self.scheduler
        if not scheduler.record.durable:
            entries = await scheduler._cluster_story(keys, on_error, run)
            return {"entries": entries, "before_seq": None}
        if before_seq is None:
            await scheduler._ask_workers(list(scheduler.workers.values()), "ship-records")
        page_size = int(config.get("events.page-size"))
        records = await scheduler._off_loop(
            partial(
                scheduler.record.story_page,
                *keys,
                before_seq=before_seq,
                limit=page_size if limit is None else max(0, min(limit, page_size)),
                run=run,
            )
        )
        entries = await scheduler._off_loop(scheduler.record.explain, records, run)
        return {"entries": entries, "before_seq": records[0].seq if records else None}
