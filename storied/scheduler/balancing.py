"""The I/O side of work stealing (``storied.scheduler.stealing``): it runs a balancing pass
every ``scheduler.work-stealing-interval``, sends the steal requests, applies the victims'
answers, and puts every request and outcome on the record under the ``stealing`` topic and in
the ``storied.scheduler`` log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storied import config
from storied.scheduler.state import Effects
from storied.scheduler.stealing import WorkStealing

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.scheduler")


class StealingExtension:
    """A scheduler extension: balances the workers' loads by work stealing."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.stealing = WorkStealing(scheduler.state)
        #: whether balancing passes run (it may be switched at run time)
        self.enabled = bool(config.get("scheduler.work-stealing"))
        self.interval = config.parse_timedelta(config.get("scheduler.work-stealing-interval"))
        if not self.interval or self.interval <= 0:
            raise ValueError(
                "scheduler.work-stealing-interval must be a positive duration such as '100ms', "
                f"not {config.get('scheduler.work-stealing-interval')!r}"
            )
        scheduler._spawn(self._balance_periodically())

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {}

    def remove_client(self, client: str) -> None:
        pass

    def remove_worker(self, address: str) -> None:
        self.stealing.remove_worker(address)

    async def _balance_periodically(self) -> None:
        scheduler = self.scheduler
        while scheduler.status == "running":
            await asyncio.sleep(self.interval)  # type: ignore[arg-type]
            if self.enabled and len(scheduler.state.workers) > 1:
                self._apply(self.stealing.balance())

    def steal_response(self, victim: str, key: str, state: str | None, stimulus_id: str) -> None:
        """A victim's answer to a steal request (a worker stream message)."""
        self._apply(self.stealing.steal_response(victim, key, state, stimulus_id))

    def _apply(self, effects: Effects) -> None:
        """Send the messages; the events go on the record with them (``Scheduler._apply``)."""
        for _, event in effects.events:
            logger.debug(
                "%s %s: %s -> %s", event["action"], event["key"], event["victim"], event["thief"]
            )
        self.scheduler._apply(effects)
