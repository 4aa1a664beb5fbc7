"""Cluster management a client asks the scheduler for, as Dask's: restart, retire workers
(moving the data only they hold first), who holds what, upload a file, shut down.

Which keys must move, and where, is task state (``SchedulerState.retirement_plan``); this
extension does the I/O and writes each operation to the record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from storied import config
from storied.comm import ConnectionPool
from storied.protocol.serialize import pickle_dumps
from storied.worker.upload import UploadFile, check_upload_name

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler, _WorkerLink

logger = logging.getLogger("storied.scheduler")

#: the removal reason of a retired worker (its ``remove-worker`` event says so)
RETIRED = "retired"
#: how often the waits below look again
POLL_INTERVAL = 0.02


class ClusterManager:
    """A scheduler extension: the management requests of ``storied.client.manage``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.pool: ConnectionPool | None = None
        self._closing: asyncio.Task[None] | None = None
        #: names of the workers retired so far (a LocalCluster does not start them again)
        self.retired_names: set[str] = set()
        #: how long a worker closing on request (retired, restarted) is waited for
        self.close_timeout = config.parse_timedelta(config.get("nanny.close-timeout")) or 10.0

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            "cluster-who-has": self.who_has,
            "has-what": self.has_what,
            "nthreads": self.nthreads,
            "retire-workers": self.retire_workers,
            "restart": self.restart,
            "restart-workers": self.restart_workers,
            "upload-file": self.upload_file,
            "shutdown": self.shutdown,
        }

    def remove_client(self, client: str) -> None:
        pass

    def remove_worker(self, address: str) -> None:
        if self.pool is not None:
            self.pool.remove(address)

    # ------------------------------------------------------------------ queries

    def who_has(self, client: str, keys: list[str] | None = None) -> dict[str, list[str]]:
        state = self.scheduler.state
        return state.who_has(list(state.tasks) if keys is None else keys)

    def has_what(self, client: str, workers: list[str] | None = None) -> dict[str, list[str]]:
        state = self.scheduler.state
        return {
            address: sorted(ts.key for ts in state.workers[address].has_what)
            for address in self._addresses(workers)
            if address in state.workers
        }

    def nthreads(self, client: str, workers: list[str] | None = None) -> dict[str, int]:
        state = self.scheduler.state
        return {
            address: state.workers[address].nthreads
            for address in self._addresses(workers)
            if address in state.workers
        }

    def _addresses(self, workers: Iterable[str] | None) -> list[str]:
        """Worker addresses for ``workers`` given by address or name (None: every worker);
        ``ValueError`` naming any that is not a worker of this scheduler."""
        links = self.scheduler.workers
        if workers is None:
            return list(links)
        by_name = {link.name: address for address, link in links.items()}
        found, unknown = [], []
        for worker in workers:
            address = worker if worker in links else by_name.get(str(worker))
            (found if address is not None else unknown).append(address or worker)
        if unknown:
            raise ValueError(
                f"no worker {unknown} at this scheduler; it has {sorted(links)} "
                "(pass addresses or names)"
            )
        return list(dict.fromkeys(found))

    # ------------------------------------------------------------------ retire

    async def retire_workers(
        self,
        client: str,
        workers: list[str] | None = None,
        close_workers: bool = True,
        remove: bool = True,
    ) -> dict[str, dict[str, Any]]:
        """Move the data only ``workers`` hold to the others, then close (or only remove)
        them; ``{address: its identity}`` of those retired, as Dask's."""
        scheduler = self.scheduler
        addresses = self._idle_workers() if workers is None else self._addresses(workers)
        if not addresses:
            return {}
        plan = scheduler.state.retirement_plan(addresses)
        for address in addresses:  # as Dask's: a retiring worker is sent no new tasks
            scheduler._apply(
                scheduler.state.set_worker_status(
                    address, "closing_gracefully", f"retire-workers-{time.time()}"
                )
            )
        retired = {
            address: scheduler.state.workers[address].identity()
            for address in addresses
            if address in scheduler.state.workers
        }
        moved = await self._move(plan)
        logger.info(
            "Retire workers %s (asked by %s): %d keys moved to the others",
            addresses,
            client,
            moved,
        )
        scheduler.log_event(
            ["all", "retire-workers"],
            {
                "action": "retire-workers",
                "client": client,
                "workers": addresses,
                "moved-keys": moved,
                "close": close_workers,
                "remove": remove,
            },
        )
        self.retired_names.update(
            scheduler.workers[a].name for a in addresses if a in scheduler.workers
        )
        if close_workers:
            for address in addresses:
                link = scheduler.workers.get(address)
                if link is not None:
                    link.stream.send({"op": "close", "reason": RETIRED, "report": True})
            await self._wait_until(
                lambda: not any(a in scheduler.workers for a in addresses), self.close_timeout
            )
        if remove:
            for address in addresses:  # a worker that did not leave in time, or stays up
                scheduler._remove_worker(address, RETIRED, expected=True, cause=RETIRED)
        return retired

    def _idle_workers(self) -> list[str]:
        """Dask's choice when no workers are named: the idle ones, keeping at least one."""
        state = self.scheduler.state
        idle = [address for address, ws in state.workers.items() if not ws.processing]
        return idle[1:] if len(idle) == len(state.workers) else idle

    async def _move(self, plan: dict[str, dict[str, list[str]]]) -> int:
        """Copy each key from a retiring holder to its target, through this scheduler."""
        if self.pool is None:
            self.pool = ConnectionPool(self.scheduler.security)
        pool = self.pool
        moved = 0
        for target, keys in plan.items():
            by_source: dict[str, list[str]] = {}
            for key, holders in keys.items():
                by_source.setdefault(holders[0], []).append(key)
            for source, source_keys in by_source.items():
                reply = await pool.request(source, {"op": "get_data", "keys": source_keys})
                data = reply.get("data") or {}
                if reply.get("errors"):
                    logger.warning("Could not move %s off %s", reply["errors"], source)
                if not data:
                    continue
                await pool.request(target, {"op": "update_data", "data": data})
                scheduler = self.scheduler
                scheduler._apply(
                    scheduler.state.add_replicas(target, list(data), f"retire-move-{time.time()}")
                )
                moved += len(data)
        return moved

    async def _wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return True

    # ------------------------------------------------------------------ restart

    async def restart(
        self, client: str, timeout: float = 120.0, wait_for_workers: bool = True
    ) -> dict[str, Any]:
        """Forget every task (clients' futures are cancelled), restart each worker through
        its nanny and close those without one; with ``wait_for_workers``, return once as many
        workers as before have joined (``TimeoutError`` if not within ``timeout``)."""
        scheduler = self.scheduler
        links = list(scheduler.workers.values())
        nannies = scheduler.nannies.links
        restarted = [link for link in links if link.nanny in nannies]
        closed = [link for link in links if link.nanny not in nannies]
        logger.info("Restart (asked by %s): %d workers", client, len(links))
        scheduler.log_event(
            ["all", "restart"],
            {
                "action": "restart",
                "client": client,
                "workers": [link.address for link in links],
                "restarted-by-nanny": [link.address for link in restarted],
                "closed": [link.address for link in closed],
            },
        )
        scheduler._apply(scheduler.state.release_all(f"restart-{time.time()}"))
        for link in restarted:
            nannies[link.nanny].stream.send(  # type: ignore[index]
                {"op": "restart-worker", "reason": f"restart asked by {client}"}
            )
        for link in closed:
            link.stream.send({"op": "close", "reason": "restart", "report": True})
        old = {link.address for link in links}
        gone = await self._wait_until(lambda: not old & set(scheduler.workers), timeout)
        if not gone:
            raise TimeoutError(
                f"workers {sorted(old & set(scheduler.workers))} did not close within {timeout}s"
            )
        if wait_for_workers:
            await self._wait_for_count(len(restarted), timeout)
        return {"workers": len(links), "closed": [link.name for link in closed]}

    async def restart_workers(
        self, client: str, workers: list[str], timeout: float = 120.0
    ) -> dict[str, str]:
        """Restart ``workers`` (addresses or names) through their nannies, keeping every task
        (what they held is recomputed, or fetched from copies elsewhere), as Dask's
        ``restart_workers``. ``{worker as given: "OK" or "timed out"}``, once each nanny's next
        worker has joined or ``timeout`` has passed. ``ValueError`` naming workers without a
        nanny, or not of this scheduler."""
        scheduler = self.scheduler
        given = {worker: self._addresses([worker])[0] for worker in workers}
        addresses = list(dict.fromkeys(given.values()))
        links = {address: scheduler.workers[address] for address in addresses}
        nannies = scheduler.nannies.links
        unsupervised = sorted(a for a, link in links.items() if link.nanny not in nannies)
        if unsupervised:
            raise ValueError(
                f"restart_workers needs workers under a nanny; {unsupervised} have none "
                "(start them with a nanny, or use retire_workers or restart instead)"
            )
        logger.info("Restart workers %s (asked by %s)", addresses, client)
        scheduler.log_event(
            ["all", "restart-workers"],
            {"action": "restart-workers", "client": client, "workers": addresses},
        )
        for link in links.values():
            nannies[link.nanny].stream.send(  # type: ignore[index]
                {"op": "restart-worker", "reason": f"restart_workers asked by {client}"}
            )

        def replaced(old: _WorkerLink) -> bool:
            return old.address not in scheduler.workers and any(
                new.nanny == old.nanny and new.pid != old.pid for new in scheduler.workers.values()
            )

        await self._wait_until(lambda: all(map(replaced, links.values())), timeout)
        return {w: "OK" if replaced(links[a]) else "timed out" for w, a in given.items()}

    async def _wait_for_count(self, count: int, timeout: float) -> None:
        workers = self.scheduler.workers
        if not await self._wait_until(lambda: len(workers) >= count, timeout):
            raise TimeoutError(
                f"only {len(workers)} of {count} workers came back within {timeout}s; "
                "pass a larger timeout, or wait_for_workers=False"
            )

    # ------------------------------------------------------------------ upload, shutdown

    async def upload_file(
        self, client: str, filename: str, data: bytes, load: bool = True
    ) -> dict[str, list[str]]:
        """Every worker writes and imports the file (an import error is raised here); workers
        joining later get it too, as a worker plugin kept here."""
        scheduler = self.scheduler
        name = check_upload_name(filename)
        if not isinstance(data, bytes):
            raise TypeError(f"upload_file data must be bytes, not {type(data).__name__}")
        plugin = UploadFile(name, data, load)
        scheduler.worker_plugins[plugin.name] = pickle_dumps(plugin)
        logger.info("Client %s uploads %s (%d bytes) to every worker", client, name, len(data))
        scheduler.log_event(
            ["all", "upload-file"],
            {
                "action": "upload-file",
                "client": client,
                "filename": name,
                "bytes": len(data),
                "workers": list(scheduler.workers),
            },
        )
        return await scheduler._broadcast_request(
            "upload-file", None, filename=name, data=data, load=load
        )

    async def shutdown(self, client: str) -> None:
        """Close the scheduler and, through it, every worker (their nannies close with them)."""
        scheduler = self.scheduler
        logger.info("Shutdown asked by client %s", client)
        scheduler.log_event(
            ["all", "shutdown"],
            {"action": "shutdown", "client": client, "workers": list(scheduler.workers)},
        )
        # after the reply has gone out, and not as a task of the scheduler's, which its
        # close cancels
        asyncio.get_running_loop().call_soon(self._start_closing)

    def _start_closing(self) -> None:
        self._closing = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        """Workers first, each told to close and waited for (a scheduler closing with workers
        connected may cut their link before they read its word, and they would try to
        rejoin); then the scheduler."""
        scheduler = self.scheduler
        for link in list(scheduler.workers.values()):
            link.stream.send({"op": "close", "reason": "shutdown", "report": True})
        await self._wait_until(lambda: not scheduler.workers, self.close_timeout)
        if self.pool is not None:
            await self.pool.close()
        await scheduler.close()
