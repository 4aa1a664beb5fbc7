"""Queue: a named first-in-first-out queue on the scheduler, between clients and tasks."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.client import Coordinated
from storied.coordination.values import pack_value, unpack_value

if TYPE_CHECKING:
    from storied.client.client import Client


class QueueState:
    """One queue on the scheduler: packed values (see ``values``), oldest first."""

    def __init__(self, name: str, maxsize: int = 0) -> None:
        self.name = name
        self.maxsize = maxsize
        self.items: collections.deque[dict[str, Any]] = collections.deque()

    def full(self) -> bool:
        return bool(self.maxsize) and len(self.items) >= self.maxsize

    def put(self, packed: dict[str, Any]) -> bool:
        """Append ``packed``; False (nothing changed) when the queue is full."""
        if self.full():
            return False
        self.items.append(packed)
        return True

    def get(self) -> dict[str, Any] | None:
        return self.items.popleft() if self.items else None

    def get_all(self) -> list[dict[str, Any]]:
        items = list(self.items)
        self.items.clear()
        return items


class Queue(Coordinated):
    """A cluster-wide queue, as Dask's Queue: ``put``, ``get``, ``qsize``.

    It may hold futures (kept alive while queued) or any picklable values (Dask takes
    msgpack-able values only).
    """

    prefix = "queue"

    def __init__(
        self, name: str | None = None, client: Client | None = None, maxsize: int = 0
    ) -> None:
        if not isinstance(maxsize, int) or maxsize < 0:
            raise ValueError(f"maxsize must be a non-negative int, not {maxsize!r}")
        super().__init__(name, client)
        self.maxsize = maxsize

    def put(self, value: Any, timeout: float | str | None = None) -> Any:
        """Append ``value``; when full, wait for room (``TimeoutError`` after ``timeout``)."""
        return self._call(self._put, pack_value(value), config.parse_timedelta(timeout))

    async def _put(
        self, packed: dict[str, Any], timeout: float | None, caller: dict[str, Any]
    ) -> None:
        if not await self._ask(
            "queue-put", caller, value=packed, maxsize=self.maxsize, wait=timeout
        ):
            raise TimeoutError(f"queue {self.name!r} stayed full for {timeout}s")

    def get(self, timeout: float | str | None = None, batch: bool | int = False) -> Any:
        """The oldest value, waiting for one (``TimeoutError`` after ``timeout`` seconds).

        ``batch=True``: everything queued now, as a list, without waiting; ``batch=n``: a
        list of the next ``n`` values, waiting for them.
        """
        if batch is not False and batch is not True and (not isinstance(batch, int) or batch < 0):
            raise ValueError(f"batch must be True, False or a non-negative int, not {batch!r}")
        return self._call(self._get, config.parse_timedelta(timeout), batch)

    async def _get(self, timeout: float | None, batch: bool | int, caller: dict[str, Any]) -> Any:
        reply = await self._ask(
            "queue-get", caller, maxsize=self.maxsize, wait=timeout, batch=batch
        )
        if reply is None:
            raise TimeoutError(f"queue {self.name!r} had nothing to get within {timeout}s")
        if batch is False:
            return unpack_value(self.client, reply)
        return [unpack_value(self.client, packed) for packed in reply]

    def qsize(self) -> Any:
        """How many values are queued now."""
        return self._call(self._qsize)

    async def _qsize(self, caller: dict[str, Any]) -> int:
        return int(await self._ask("queue-qsize", caller, maxsize=self.maxsize))

    def __reduce__(self) -> Any:
        return (type(self), (self.name, None, self.maxsize))
