"""The scheduler's side of nannies: who supervises which worker, and why a worker died.

A nanny keeps a light connection to the scheduler: it registers its id and pid, and reports
each death of its worker (exit code or signal). A worker under a connected nanny whose
connection drops is removed once its nanny has said why it died, so the ``remove-worker``
event carries the cause; if no word comes within ``REPORT_GRACE`` seconds (the nanny died too,
or only the network failed), it is removed with the connection's reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from storied.comm import Comm
from storied.comm.stream import Stream

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.scheduler")

#: seconds a dropped worker waits for its nanny's report before it is removed anyway; a nanny
#: sees its worker's exit as soon as the scheduler sees the connection close
REPORT_GRACE = 2.0


class _NannyLink:
    __slots__ = ("id", "pid", "stream")

    def __init__(self, nanny_id: str, pid: int | None, stream: Stream) -> None:
        self.id, self.pid, self.stream = nanny_id, pid, stream


class Nannies:
    """The nannies connected to ``scheduler``, and the removals waiting for their word."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.links: dict[str, _NannyLink] = {}
        #: (nanny id, worker pid) -> the removal waiting for that nanny's report
        self._awaiting: dict[tuple[str, int | None], tuple[str, str, asyncio.TimerHandle]] = {}

    def pid(self, nanny_id: str | None) -> int | None:
        link = self.links.get(nanny_id) if nanny_id is not None else None
        return link.pid if link is not None else None

    async def serve(self, comm: Comm, msg: dict[str, Any]) -> None:
        nanny_id, pid = msg.get("id"), msg.get("pid")
        if not isinstance(nanny_id, str) or not isinstance(pid, int | None):
            logger.warning("Refusing malformed nanny registration from %s", comm.peer_address)
            return
        stream = Stream(comm, self._handlers(nanny_id), f"stream from nanny {nanny_id}")
        self.links[nanny_id] = link = _NannyLink(nanny_id, pid, stream)
        await comm.send({"status": "OK"})
        logger.info("Register nanny %s (pid %s) from %s", nanny_id, pid, comm.peer_address)
        try:
            await stream.run()
        finally:
            if self.links.get(nanny_id) is link:
                del self.links[nanny_id]
                for key in [key for key in self._awaiting if key[0] == nanny_id]:
                    self._remove_now(key)

    def worker_connection_lost(self, address: str, reason: str) -> None:
        """Remove the worker at ``address`` now, or, if its nanny is here to tell why it
        died, once it has."""
        scheduler = self.scheduler
        link = scheduler.workers[address]
        if link.nanny not in self.links:
            scheduler._remove_worker(address, reason, expected=False, cause="connection-lost")
            return
        key = (link.nanny, link.pid)
        handle = asyncio.get_running_loop().call_later(REPORT_GRACE, self._remove_now, key)
        self._awaiting[key] = (address, reason, handle)

    def _remove_now(self, key: tuple[str, int | None]) -> None:
        address, reason, handle = self._awaiting.pop(key)
        handle.cancel()
        if self.scheduler.status == "running":  # a closing scheduler keeps its workers
            self.scheduler._remove_worker(address, reason, expected=False, cause="connection-lost")

    def _handlers(self, nanny_id: str) -> dict[str, Any]:
        scheduler = self.scheduler

        def worker_exit(pid: int, reason: str, **cause: Any) -> None:
            waiting = self._awaiting.pop((nanny_id, pid), None)
            if waiting is not None:
                waiting[2].cancel()
            for address, link in list(scheduler.workers.items()):
                if link.nanny == nanny_id and link.pid == pid:
                    scheduler._remove_worker(
                        address,
                        reason,
                        expected=False,
                        cause="exited" if cause.get("signal") is None else "killed",
                        exit_status={name: cause.get(name) for name in ("exit-code", "signal")},
                    )

        def log_events(events: list[Any]) -> None:
            for event in events:
                scheduler._log_remote_event(event, nanny_id)

        return {"worker-exit": worker_exit, "log-events": log_events, "heartbeat": lambda: None}
