"""The scheduler's side of the coordination primitives: their state, waits and record.

The state of each primitive is a plain object (``VariableState``, ``QueueState``, ...)
unit-tested on its own; this extension serves the client requests on top of them, makes
waiting requests wait (without holding up the scheduler), keeps the futures held by them
alive, frees what a departing client or worker held, and records every operation as an event
under the primitive's topic (see docs/coordination.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.datasets import DatasetsState
from storied.coordination.event import EventState
from storied.coordination.holds import KeyHolds
from storied.coordination.multilock import MultiLockState
from storied.coordination.queue import QueueState
from storied.coordination.semaphore import Lease, SemaphoreState
from storied.coordination.variable import VariableState

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.scheduler.coordination")

Caller = dict[str, Any]


class Waiters:
    """Requests waiting for a change to a named thing; woken all at once to check again."""

    def __init__(self) -> None:
        self._waiting: collections.defaultdict[Hashable, list[asyncio.Future[None]]] = (
            collections.defaultdict(list)
        )

    def notify(self, what: Hashable) -> None:
        for future in self._waiting.pop(what, []):
            if not future.done():
                future.set_result(None)

    async def until(self, what: Hashable, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``ready()`` (checked now and at each ``notify(what)``) is true; False if
        ``timeout`` seconds pass first. ``ready`` may act (take a lease): nothing else runs
        between its true answer and the caller's next step."""
        loop = asyncio.get_running_loop()
        # the clock read now, not the loop's (uvloop's is cached per turn of the loop, and a
        # timeout measured by it may end early)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if ready():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            future = loop.create_future()
            self._waiting[what].append(future)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                self._forget(what, future)
            except asyncio.CancelledError:
                self._forget(what, future)
                raise

    def _forget(self, what: Hashable, future: asyncio.Future[None]) -> None:
        """A waiter that gave up (timed out, or its client left) is no longer kept."""
        waiting = self._waiting.get(what)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._waiting[what]


class CoordinationExtension:
    """Variables, queues, semaphores and locks, events and published datasets."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.holds = KeyHolds()
        self.variables = VariableState()
        self.queues: dict[str, QueueState] = {}
        self.semaphores: dict[str, SemaphoreState] = {}
        self.multilocks = MultiLockState()
        self.events = EventState()
        self.datasets = DatasetsState()
        self.waiters = Waiters()
        self.lease_timeout = _lease_timeout()
        self.lease_validation_interval = (
            config.parse_timedelta(config.get("coordination.lease-validation-interval")) or 1.0
        )
        if self.lease_timeout is not None:
            scheduler._spawn(self._expire_leases())

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "variable-set": self.variable_set,
            "variable-get": self.variable_get,
            "variable-delete": self.variable_delete,
            "queue-put": self.queue_put,
            "queue-get": self.queue_get,
            "queue-qsize": self.queue_qsize,
            "semaphore-acquire": self.semaphore_acquire,
            "semaphore-release": self.semaphore_release,
            "semaphore-refresh": self.semaphore_refresh,
            "semaphore-value": self.semaphore_value,
            "semaphore-close": self.semaphore_close,
            "multilock-acquire": self.multilock_acquire,
            "multilock-release": self.multilock_release,
            "event-set": self.event_set,
            "event-clear": self.event_clear,
            "event-wait": self.event_wait,
            "event-is-set": self.event_is_set,
            "dataset-publish": self.dataset_publish,
            "dataset-get": self.dataset_get,
            "dataset-list": self.dataset_list,
            "dataset-unpublish": self.dataset_unpublish,
        }

    # ------------------------------------------------------------------ holders leaving

    def remove_client(self, client: str) -> None:
        for semaphore in self.semaphores.values():
            self._freed(semaphore, semaphore.release_held_by(client=client), "client left")
        for request_id in self.multilocks.requests_of(client=client):
            self._multilock_withdraw(request_id, None, "client left")

    def remove_worker(self, address: str) -> None:
        for semaphore in self.semaphores.values():
            self._freed(semaphore, semaphore.release_held_by(worker=address), "worker removed")
        for request_id in self.multilocks.requests_of(worker=address):
            self._multilock_withdraw(request_id, None, "worker removed")

    # ------------------------------------------------------------------ the record

    def _record(
        self,
        topic: str,
        action: str,
        name: str,
        client: str | None,
        caller: Caller | None,
        **details: Any,
    ) -> None:
        """One event: what (``action`` on ``name``) and who (client, worker, task)."""
        msg = {"action": action, "name": name, "client": client}
        if caller:
            msg["worker"], msg["task"] = caller.get("worker"), caller.get("task")
        msg.update(details)
        self.scheduler.log_event(topic, msg)

    # ------------------------------------------------------------------ futures held

    def _check_known(self, keys: list[str]) -> None:
        tasks = self.scheduler.state.tasks
        for key in keys:
            if key not in tasks:
                raise ValueError(
                    f"future {key!r} is unknown to the scheduler (released or lost); "
                    "keep a Future alive while storing it"
                )

    def _hold(self, holder: str, keys: list[str]) -> None:
        new = self.holds.hold(holder, keys)
        if new:
            state = self.scheduler.state
            self.scheduler._apply(state.client_desires_keys(holder, new, _stimulus(holder)))

    def _let_go(self, holder: str, keys: list[str]) -> None:
        gone = self.holds.release(holder, keys)
        if gone:
            state = self.scheduler.state
            self.scheduler._apply(state.client_releases_keys(holder, gone, _stimulus(holder)))

    def _hand_over(self, client: str, keys: list[str]) -> None:
        """The reading client wants these keys now (before any holder lets go of them)."""
        if keys:
            state = self.scheduler.state
            self.scheduler._apply(state.client_desires_keys(client, keys, _stimulus(client)))

    # ------------------------------------------------------------------ variables

    def variable_set(self, client: str, name: str, who: Caller, value: dict[str, Any]) -> None:
        keys = list(value["keys"])
        self._check_known(keys)
        holder = f"variable-{name}"
        self._hold(holder, keys)
        self._let_go(holder, self.variables.set(name, value))
        self.waiters.notify(("variable", name))
        self._record("variable", "set", name, client, who, keys=keys)

    async def variable_get(
        self, client: str, name: str, who: Caller, wait: float | None = None
    ) -> dict[str, Any] | None:
        found = await self.waiters.until(
            ("variable", name), lambda: self.variables.get(name) is not None, wait
        )
        packed = self.variables.get(name) if found else None
        if packed is None:
            self._record("variable", "get-timeout", name, client, who, timeout=wait)
            return None
        self._hand_over(client, packed["keys"])
        self._record("variable", "get", name, client, who, keys=packed["keys"])
        return packed

    def variable_delete(self, client: str, name: str, who: Caller) -> None:
        keys = self.variables.delete(name)
        if keys is None:
            return
        self._let_go(f"variable-{name}", keys)
        self._record("variable", "delete", name, client, who, keys=keys)

    # ------------------------------------------------------------------ queues

    def _queue(self, name: str, maxsize: int) -> QueueState:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = QueueState(name, maxsize)
        return queue

    async def queue_put(
        self,
        client: str,
        name: str,
        who: Caller,
        value: dict[str, Any],
        maxsize: int = 0,
        wait: float | None = None,
    ) -> bool:
        keys = list(value["keys"])
        self._check_known(keys)
        queue = self._queue(name, maxsize)
        if not await self.waiters.until(("queue", name), lambda: queue.put(value), wait):
            self._record("queue", "put-timeout", name, client, who, timeout=wait)
            return False
        self._hold(f"queue-{name}", keys)
        self.waiters.notify(("queue", name))
        self._record("queue", "put", name, client, who, keys=keys, qsize=len(queue.items))
        return True

    async def queue_get(
        self,
        client: str,
        name: str,
        who: Caller,
        maxsize: int = 0,
        wait: float | None = None,
        batch: bool | int = False,
    ) -> Any:
        queue = self._queue(name, maxsize)
        if batch is True:
            items = queue.get_all()
        else:
            items = []
            deadline = None if wait is None else time.monotonic() + wait
            for _ in range(1 if batch is False else batch):
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
                if not await self.waiters.until(
                    ("queue", name), lambda: _take(queue, items), remaining
                ):
                    queue.items.extendleft(reversed(items))  # back in front, in order
                    self.waiters.notify(("queue", name))
                    self._record("queue", "get-timeout", name, client, who, timeout=wait)
                    return None
        keys = [key for packed in items for key in packed["keys"]]
        self._hand_over(client, keys)
        self._let_go(f"queue-{name}", keys)
        self.waiters.notify(("queue", name))
        self._record(
            "queue", "get", name, client, who, keys=keys, n=len(items), qsize=len(queue.items)
        )
        return items[0] if batch is False else items

    def queue_qsize(self, client: str, name: str, who: Caller, maxsize: int = 0) -> int:
        return len(self._queue(name, maxsize).items)

    # ------------------------------------------------------------------ semaphores and locks

    def _semaphore(self, name: str, max_leases: int, kind: str) -> SemaphoreState:
        semaphore = self.semaphores.get(name)
        if semaphore is None:
            if not isinstance(max_leases, int) or max_leases < 1:
                raise ValueError(f"max_leases must be a positive int, not {max_leases!r}")
            semaphore = self.semaphores[name] = SemaphoreState(name, max_leases, kind)
            self._record(kind, "create", name, None, None, max_leases=max_leases)
        else:
            semaphore.check_max_leases(max_leases)
        return semaphore

    async def semaphore_acquire(
        self,
        client: str,
        name: str,
        who: Caller,
        max_leases: int,
        lease_id: str,
        kind: str = "semaphore",
        wait: float | None = None,
    ) -> dict[str, Any]:
        semaphore = self._semaphore(name, max_leases, kind)
        worker, task = who.get("worker"), who.get("task")
        start = time.monotonic()
        acquired = await self.waiters.until(
            ("semaphore", name),
            lambda: semaphore.try_acquire(lease_id, client, worker, task, time.monotonic()),
            wait,
        )
        waited = time.monotonic() - start
        if acquired:
            logger.debug("%s %r: lease %s acquired by %s", kind, name, lease_id, client)
        self._record(
            semaphore.kind,
            "acquire" if acquired else "acquire-timeout",
            name,
            client,
            who,
            lease_id=lease_id,
            waited=waited,
            held=len(semaphore.leases),
        )
        return {"acquired": acquired, "lease_timeout": self.lease_timeout}

    def semaphore_release(self, client: str, name: str, who: Caller, lease_id: str) -> bool:
        semaphore = self.semaphores.get(name)
        lease = semaphore.release(lease_id) if semaphore is not None else None
        if semaphore is None or lease is None:
            logger.warning(
                "Release of %r by %s: lease %s is not held (it was already freed)",
                name,
                client,
                lease_id,
            )
            return False
        self.waiters.notify(("semaphore", name))
        self._record(
            semaphore.kind,
            "release",
            name,
            client,
            who,
            lease_id=lease_id,
            held_for=time.monotonic() - lease.acquired,
            held=len(semaphore.leases),
        )
        return True

    def semaphore_refresh(
        self, client: str, name: str, who: Caller, lease_ids: list[str]
    ) -> list[str]:
        semaphore = self.semaphores.get(name)
        if semaphore is None:
            return list(lease_ids)
        return semaphore.refresh(lease_ids, time.monotonic())

    def semaphore_value(self, client: str, name: str, who: Caller) -> int:
        semaphore = self.semaphores.get(name)
        return len(semaphore.leases) if semaphore is not None else 0

    def semaphore_close(self, client: str, name: str, who: Caller) -> None:
        semaphore = self.semaphores.pop(name, None)
        if semaphore is not None:
            self.waiters.notify(("semaphore", name))
            self._record(semaphore.kind, "close", name, client, who, held=len(semaphore.leases))

    def _freed(self, semaphore: SemaphoreState, leases: list[Lease], reason: str) -> None:
        """Leases the scheduler took back from their holders: logged loudly, recorded."""
        for lease in leases:
            logger.warning(
                "%s %r: lease %s of %s (worker %s, task %s) freed: %s",
                semaphore.kind,
                semaphore.name,
                lease.lease_id,
                lease.client,
                lease.worker,
                lease.task,
                reason,
            )
            self._record(
                semaphore.kind,
                "release",
                semaphore.name,
                lease.client,
                {"worker": lease.worker, "task": lease.task},
                lease_id=lease.lease_id,
                held_for=time.monotonic() - lease.acquired,
                held=len(semaphore.leases),
                reason=reason,
            )
        if leases:
            self.waiters.notify(("semaphore", semaphore.name))

    async def _expire_leases(self) -> None:
        """Free leases whose holders stopped refreshing them (``coordination.lease-timeout``)."""
        assert self.lease_timeout is not None
        while True:
            await asyncio.sleep(self.lease_validation_interval)
            now = time.monotonic()
            for semaphore in self.semaphores.values():
                stale = semaphore.expire(now, self.lease_timeout)
                self._freed(semaphore, stale, f"not refreshed for {self.lease_timeout}s")

    # ------------------------------------------------------------------ multilocks

    async def multilock_acquire(
        self,
        client: str,
        who: Caller,
        names: list[str],
        num_locks: int,
        request_id: str,
        wait: float | None = None,
    ) -> bool:
        start = time.monotonic()
        worker, task = who.get("worker"), who.get("task")
        granted = self.multilocks.request(request_id, names, num_locks, client, worker, task, start)
        if not granted:
            try:
                granted = await self.waiters.until(
                    ("multilock", request_id), lambda: self.multilocks.granted(request_id), wait
                )
            except asyncio.CancelledError:
                self._multilock_withdraw(request_id, None, "request cancelled")
                raise
            if not granted:
                self._multilock_withdraw(request_id, None, "timed out")
        locked = sorted(set(names))
        self._record(
            "multilock",
            "acquire" if granted else "acquire-timeout",
            ",".join(locked),
            client,
            who,
            names=locked,
            num_locks=num_locks,
            request_id=request_id,
            waited=time.monotonic() - start,
        )
        return granted

    def multilock_release(self, client: str, who: Caller, request_id: str) -> bool:
        if self._multilock_withdraw(request_id, who, None) is None:
            logger.warning(
                "Release of MultiLock request %s by %s: it is not held (it was already freed)",
                request_id,
                client,
            )
            return False
        return True

    def _multilock_withdraw(
        self, request_id: str, caller: Caller | None, reason: str | None
    ) -> str | None:
        """Free a request's locks (its holder released them, left, or gave up waiting) and
        wake the requests that now hold theirs; recorded as a release if it held them."""
        request, granted = self.multilocks.withdraw(request_id, time.monotonic())
        if request is None:
            return None
        for other in granted:
            self.waiters.notify(("multilock", other))
        if request.granted is not None and reason != "timed out":
            details = {} if reason is None else {"reason": reason}
            locked = sorted(request.names)
            self._record(
                "multilock",
                "release",
                ",".join(locked),
                request.client,
                caller or {"worker": request.worker, "task": request.task},
                names=locked,
                request_id=request_id,
                held_for=time.monotonic() - request.granted,
                **details,
            )
            if reason is not None:
                logger.warning(
                    "MultiLock %s of %s (worker %s, task %s) freed: %s",
                    locked,
                    request.client,
                    request.worker,
                    request.task,
                    reason,
                )
        return request_id

    # ------------------------------------------------------------------ events

    def event_set(self, client: str, name: str, who: Caller) -> None:
        self.events.set(name)
        self.waiters.notify(("event", name))
        self._record("event", "set", name, client, who)

    def event_clear(self, client: str, name: str, who: Caller) -> None:
        self.events.clear(name)
        self._record("event", "clear", name, client, who)

    async def event_wait(
        self, client: str, name: str, who: Caller, wait: float | None = None
    ) -> bool:
        start = time.monotonic()
        is_set = await self.waiters.until(("event", name), lambda: self.events.is_set(name), wait)
        self._record(
            "event",
            "wait" if is_set else "wait-timeout",
            name,
            client,
            who,
            waited=time.monotonic() - start,
        )
        return is_set

    def event_is_set(self, client: str, name: str, who: Caller) -> bool:
        return self.events.is_set(name)

    # ------------------------------------------------------------------ datasets

    def dataset_publish(
        self, client: str, who: Caller, datasets: dict[str, dict[str, Any]], override: bool
    ) -> None:
        self.datasets.check_new(list(datasets), override)
        for packed in datasets.values():
            self._check_known(list(packed["keys"]))
        for name, packed in datasets.items():
            holder = f"published-{name}"
            self._hold(holder, list(packed["keys"]))
            self._let_go(holder, self.datasets.publish(name, packed))
            self._record("dataset", "publish", name, client, who, keys=packed["keys"])

    def dataset_get(self, client: str, who: Caller, name: str) -> dict[str, Any] | None:
        packed = self.datasets.datasets.get(name)
        if packed is not None:
            self._hand_over(client, packed["keys"])
        self._record("dataset", "get" if packed else "get-missing", name, client, who)
        return packed

    def dataset_list(self, client: str, who: Caller) -> list[str]:
        return self.datasets.names()

    def dataset_unpublish(self, client: str, who: Caller, name: str) -> bool:
        keys = self.datasets.unpublish(name)
        if keys is None:
            return False
        self._let_go(f"published-{name}", keys)
        self._record("dataset", "unpublish", name, client, who, keys=keys)
        return True


def _take(queue: QueueState, items: list[dict[str, Any]]) -> bool:
    packed = queue.get()
    if packed is None:
        return False
    items.append(packed)
    return True


def _lease_timeout() -> float | None:
    """``coordination.lease-timeout`` in seconds; None (leases never time out) for "inf"."""
    value = config.get("coordination.lease-timeout")
    if value in (None, "inf"):
        return None
    return config.parse_timedelta(value)


def _stimulus(holder: str) -> str:
    return f"coordination-{holder}-{time.time()}"
