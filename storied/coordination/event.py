"""Event: a named flag on the scheduler that clients and tasks set, clear and wait for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.client import Coordinated

if TYPE_CHECKING:
    from storied.client.client import Client


class EventState:
    """The scheduler's events: the names of those set (an unknown event is clear)."""

    def __init__(self) -> None:
        self.set_names: set[str] = set()

    def set(self, name: str) -> None:
        self.set_names.add(name)

    def clear(self, name: str) -> None:
        self.set_names.discard(name)

    def is_set(self, name: str) -> bool:
        return name in self.set_names


class Event(Coordinated):
    """A cluster-wide ``threading.Event``, as Dask's Event."""

    prefix = "event"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        super().__init__(name, client)

    def set(self) -> Any:
        """Set the flag: everyone waiting wakes up."""
        return self._call(self._ask, "event-set")

    def clear(self) -> Any:
        return self._call(self._ask, "event-clear")

    def is_set(self) -> Any:
        return self._call(self._ask, "event-is-set")

    def wait(self, timeout: float | str | None = None) -> Any:
        """Wait until the flag is set; True, or False if ``timeout`` seconds passed first."""
        return self._call(self._wait, config.parse_timedelta(timeout))

    async def _wait(self, timeout: float | None, caller: dict[str, Any]) -> bool:
        return bool(await self._ask("event-wait", caller, wait=timeout))
