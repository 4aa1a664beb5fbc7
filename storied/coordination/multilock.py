"""MultiLock: several named locks taken together, as dask.distributed's MultiLock.

Each lock name has a queue of requests; the request at the front holds that lock. A request
for ``num_locks`` of its names is granted once it is at the front of that many queues, and
keeps its places in the others (as in Dask). Requests join the shortest queues first, so a
request for free locks is granted at once. The names are their own namespace: a MultiLock on
``"x"`` does not exclude ``Lock("x")``, as in Dask. Unlike Dask, the scheduler frees what a
client held when it leaves, and what a task held when its worker is removed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.client import HeldInWith, current_client, who

if TYPE_CHECKING:
    from storied.client.client import Client


@dataclass(slots=True)
class MultiLockRequest:
    """One acquire: the locks it queues for, how many more it needs, and who asked."""

    request_id: str
    names: set[str]
    left: int
    client: str
    worker: str | None
    task: str | None
    requested: float
    granted: float | None = None


class MultiLockState:
    """The scheduler's side of every MultiLock: plain data, times given by the caller."""

    def __init__(self) -> None:
        #: lock name -> ids of the requests queued for it; the first holds the lock
        self.queues: dict[str, list[str]] = {}
        self.requests: dict[str, MultiLockRequest] = {}

    def request(
        self,
        request_id: str,
        names: list[str],
        num_locks: int,
        client: str,
        worker: str | None,
        task: str | None,
        now: float,
    ) -> bool:
        """Queue a request for ``num_locks`` of ``names``; True if it holds them at once."""
        if request_id in self.requests:
            raise ValueError(f"MultiLock request {request_id!r} is already queued")
        if not names or not 1 <= num_locks <= len(set(names)):
            raise ValueError(
                f"num_locks must be between 1 and the {len(set(names))} lock names, "
                f"not {num_locks!r}"
            )
        request = MultiLockRequest(request_id, set(names), num_locks, client, worker, task, now)
        self.requests[request_id] = request
        order = sorted(request.names, key=lambda name: (len(self.queues.get(name, ())), name))
        for position, name in enumerate(order):
            queue = self.queues.setdefault(name, [])
            queue.append(request_id)
            if len(queue) == 1:
                request.left -= 1
                if request.left == 0:
                    request.names -= set(order[position + 1 :])
                    request.granted = now
                    return True
        return False

    def granted(self, request_id: str) -> bool:
        request = self.requests.get(request_id)
        return request is not None and request.left == 0

    def withdraw(self, request_id: str, now: float) -> tuple[MultiLockRequest | None, list[str]]:
        """Release what a request holds and leave the queues it waits in: the request (None
        if unknown) and the ids of the requests granted by that."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None, []
        granted = []
        for name in request.names:
            queue = self.queues[name]
            if queue[0] != request_id:
                queue.remove(request_id)
                continue
            queue.pop(0)
            if not queue:
                del self.queues[name]
                continue
            following = self.requests[queue[0]]
            if following.left > 0:
                following.left -= 1
                if following.left == 0:
                    following.granted = now
                    granted.append(following.request_id)
        return request, granted

    def requests_of(self, client: str | None = None, worker: str | None = None) -> list[str]:
        """The requests of a client, or of tasks on a worker (that left)."""
        return [
            request.request_id
            for request in self.requests.values()
            if (client is not None and request.client == client)
            or (worker is not None and request.worker == worker)
        ]


class MultiLock(HeldInWith):
    """Take several cluster-wide locks together, as Dask's ``MultiLock``.

    >>> lock = MultiLock(names=["x", "y"])  # doctest: +SKIP
    >>> with lock:  # doctest: +SKIP
    ...     use_x_and_y()
    """

    def __init__(self, names: list[str] | None = None, client: Client | None = None) -> None:
        names = list(names or [])
        if not all(isinstance(name, str) for name in names):
            raise TypeError(f"MultiLock names must be strs, not {names!r}")
        self.names = names
        self._client = client
        #: the id of this object's current request while it holds its locks
        self._request_id: str | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = current_client()
        return self._client

    def acquire(
        self,
        blocking: bool = True,
        timeout: float | str | None = None,
        num_locks: int | None = None,
    ) -> Any:
        """Take ``num_locks`` of the locks (all by default); True, or False if they were not
        all free within ``timeout`` seconds. ``blocking=False`` tries once."""
        if not blocking:
            if timeout is not None:
                raise ValueError("can't specify a timeout for a non-blocking call")
            timeout = 0
        if self._request_id is not None:
            raise RuntimeError(f"{self!r} is already acquired: release it first")
        wanted = len(set(self.names)) if num_locks is None else num_locks
        return self.client._sync(self._acquire, config.parse_timedelta(timeout), wanted, who())

    async def _acquire(self, timeout: float | None, num_locks: int, caller: dict[str, Any]) -> bool:
        request_id = uuid.uuid4().hex
        acquired = await self.client._request(
            "multilock-acquire",
            names=self.names,
            num_locks=num_locks,
            request_id=request_id,
            wait=timeout,
            who=caller,
        )
        if acquired:
            self._request_id = request_id
        return bool(acquired)

    def release(self) -> Any:
        """Give the locks back; ValueError if this object does not hold them (as Dask)."""
        if self._request_id is None:
            raise ValueError("Lock is not yet acquired")
        request_id, self._request_id = self._request_id, None
        return self.client._sync(self._release, request_id, who())

    async def _release(self, request_id: str, caller: dict[str, Any]) -> bool:
        return bool(
            await self.client._request("multilock-release", request_id=request_id, who=caller)
        )

    def locked(self) -> bool:
        """Whether this object holds its locks (asked of this object, not the scheduler)."""
        return self._request_id is not None

    def __reduce__(self) -> Any:
        return (type(self), (self.names,))

    def __repr__(self) -> str:
        return f"<MultiLock: {self.names}>"
