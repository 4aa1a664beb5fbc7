"""Semaphore and Lock: leases on a named counter kept by the scheduler.

Each acquire takes a lease with an id of its own, held for a client, or for a task through
its worker's client. The holder refreshes its leases while it holds them; the scheduler
frees a lease whose holder stops refreshing (``coordination.lease-timeout``), whose client
leaves, or whose worker is removed. A Lock is a Semaphore with one lease, as in Dask.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.client import Coordinated, HeldInWith, who

if TYPE_CHECKING:
    from storied.client.client import Client

logger = logging.getLogger("storied.client")


@dataclass(slots=True)
class Lease:
    """One lease, with who holds it: the record reports these fields."""

    lease_id: str
    client: str
    worker: str | None
    task: str | None
    acquired: float
    refreshed: float


class SemaphoreState:
    """The scheduler's side of one named semaphore: plain data, times given by the caller."""

    def __init__(self, name: str, max_leases: int, kind: str = "semaphore") -> None:
        self.name = name
        self.max_leases = max_leases
        #: ``semaphore`` or ``lock``: the topic its events are recorded under
        self.kind = kind
        self.leases: dict[str, Lease] = {}

    def check_max_leases(self, max_leases: int) -> None:
        if max_leases != self.max_leases:
            raise ValueError(
                f"{self.kind} {self.name!r} exists with max_leases={self.max_leases}; "
                f"it cannot be used with max_leases={max_leases}"
            )

    def try_acquire(
        self, lease_id: str, client: str, worker: str | None, task: str | None, now: float
    ) -> bool:
        if lease_id in self.leases:
            return True
        if len(self.leases) >= self.max_leases:
            return False
        self.leases[lease_id] = Lease(lease_id, client, worker, task, now, now)
        return True

    def release(self, lease_id: str) -> Lease | None:
        return self.leases.pop(lease_id, None)

    def refresh(self, lease_ids: list[str], now: float) -> list[str]:
        """Refresh these leases; returns the ids not held (expired or released meanwhile)."""
        unknown = []
        for lease_id in lease_ids:
            lease = self.leases.get(lease_id)
            if lease is None:
                unknown.append(lease_id)
            else:
                lease.refreshed = now
        return unknown

    def expire(self, now: float, timeout: float) -> list[Lease]:
        """Free and return the leases not refreshed within ``timeout`` seconds."""
        stale = [lease for lease in self.leases.values() if now - lease.refreshed > timeout]
        for lease in stale:
            del self.leases[lease.lease_id]
        return stale

    def release_held_by(self, client: str | None = None, worker: str | None = None) -> list[Lease]:
        """Free and return the leases of a client, or of tasks on a worker, that left."""
        gone = [
            lease
            for lease in self.leases.values()
            if (client is not None and lease.client == client)
            or (worker is not None and lease.worker == worker)
        ]
        for lease in gone:
            del self.leases[lease.lease_id]
        return gone


class Semaphore(HeldInWith, Coordinated):
    """At most ``max_leases`` holders at once, across the cluster, as Dask's Semaphore.

    >>> sem = Semaphore(max_leases=2, name="database")  # doctest: +SKIP
    >>> with sem:  # doctest: +SKIP
    ...     query_the_database()
    """

    prefix = "semaphore"
    kind = "semaphore"

    def __init__(
        self, max_leases: int = 1, name: str | None = None, client: Client | None = None
    ) -> None:
        if not isinstance(max_leases, int) or isinstance(max_leases, bool) or max_leases < 1:
            raise ValueError(f"max_leases must be a positive int, not {max_leases!r}")
        super().__init__(name, client)
        self.max_leases = max_leases
        #: ids of the leases this object holds, oldest first (``release`` frees the oldest)
        self._leases: collections.deque[str] = collections.deque()
        self._refresher: asyncio.Task[None] | None = None

    def acquire(self, blocking: bool = True, timeout: float | str | None = None) -> Any:
        """Take a lease; True, or False if none came free within ``timeout`` seconds.

        ``blocking=False`` tries once (a timeout with it is an error, as in Dask's Lock).
        """
        if not blocking:
            if timeout is not None:
                raise ValueError("can't specify a timeout for a non-blocking call")
            timeout = 0
        return self._call(self._acquire, config.parse_timedelta(timeout))

    async def _acquire(self, timeout: float | None, caller: dict[str, Any]) -> bool:
        lease_id = uuid.uuid4().hex
        reply = await self._ask(
            "semaphore-acquire",
            caller,
            max_leases=self.max_leases,
            kind=self.kind,
            lease_id=lease_id,
            wait=timeout,
        )
        if reply["acquired"]:
            self._leases.append(lease_id)
            if reply["lease_timeout"] and (self._refresher is None or self._refresher.done()):
                self._refresher = self.client._spawn(self._refresh(reply["lease_timeout"] / 5))
        return bool(reply["acquired"])

    async def _refresh(self, interval: float) -> None:
        """Keep our leases alive while we hold any (a holder that stops, loses them)."""
        while self._leases:
            await asyncio.sleep(interval)
            if not self._leases:
                return
            try:
                unknown = await self._ask("semaphore-refresh", who(), lease_ids=list(self._leases))
            except Exception as exc:
                logger.warning("Could not refresh leases of %s %r: %s", self.kind, self.name, exc)
                continue
            for lease_id in unknown:
                logger.warning(
                    "Lease %s of %s %r was freed by the scheduler (not refreshed in time)",
                    lease_id,
                    self.kind,
                    self.name,
                )

    def release(self) -> Any:
        """Give back the oldest lease this object holds; RuntimeError if it holds none."""
        if not self._leases:
            raise RuntimeError(f"{self.kind} {self.name!r} released too often")
        return self._call(self._release, self._leases.popleft())

    async def _release(self, lease_id: str, caller: dict[str, Any]) -> bool:
        return bool(await self._ask("semaphore-release", caller, lease_id=lease_id))

    def get_value(self) -> Any:
        """How many leases are held now, by anyone."""
        return self._call(self._value)

    async def _value(self, caller: dict[str, Any]) -> int:
        return int(await self._ask("semaphore-value", caller))

    def close(self) -> Any:
        """Remove the semaphore from the scheduler, leases and all (as Dask's ``close``)."""
        self._leases.clear()
        return self._call(self._ask, "semaphore-close")

    def __reduce__(self) -> Any:
        return (type(self), (self.max_leases, self.name))


class Lock(Semaphore):
    """A cluster-wide lock: a Semaphore with one lease, as Dask's Lock.

    >>> lock = Lock("x")  # doctest: +SKIP
    >>> with lock:  # doctest: +SKIP
    ...     touch_the_shared_resource()
    """

    prefix = "lock"
    kind = "lock"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        super().__init__(1, name, client)

    def locked(self) -> Any:
        """Whether anyone holds the lock now."""
        return self._call(self._locked)

    async def _locked(self, caller: dict[str, Any]) -> bool:
        return await self._value(caller) == 1

    def __reduce__(self) -> Any:
        return (type(self), (self.name,))
