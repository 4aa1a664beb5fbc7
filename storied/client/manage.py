"""Managing the cluster from a client, as Dask's ``Client`` does: ``restart``,
``retire_workers``, ``who_has``, ``has_what``, ``nthreads`` (``ncores``), ``upload_file`` and
``shutdown``. The scheduler side is ``storied.scheduler.manage``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from storied import config
from storied.client.future import Future
from storied.client.futures_of import futures_of
from storied.client.options import worker_restrictions
from storied.worker.upload import check_upload_name

logger = logging.getLogger("storied.client")

#: ``restart``'s default timeout in seconds (Dask's: four times the connect timeout)
RESTART_TIMEOUT_FACTOR = 4


class ClusterManagement:
    """Mixed into ``Client``: it provides ``_sync``, ``_request`` and the futures' states."""

    _sync: Callable[..., Any]
    _request: Callable[..., Awaitable[Any]]
    _timeout: float
    asynchronous: bool
    cluster: Any
    _states: dict[str, Any]
    _ref_lock: Any

    def who_has(self, futures: Any = None) -> Any:
        """``{key: [worker addresses holding it]}`` for ``futures`` (None: every task), as the
        scheduler knows them: workers report each copy they fetch or drop."""
        keys = None if futures is None else _keys(futures)
        return self._sync(self._request, "cluster-who-has", keys=keys)

    def has_what(self, workers: Any = None) -> Any:
        """``{worker address: [keys it holds]}`` for ``workers`` (None: every worker)."""
        return self._sync(self._request, "has-what", workers=worker_restrictions(workers))

    def nthreads(self, workers: Any = None) -> Any:
        """``{worker address: its number of threads}`` for ``workers`` (None: every worker)."""
        return self._sync(self._request, "nthreads", workers=worker_restrictions(workers))

    ncores = nthreads

    def retire_workers(
        self, workers: Any = None, close_workers: bool = True, remove: bool = True, **kwargs: Any
    ) -> Any:
        """Retire ``workers`` (addresses or names; None: the idle ones, keeping one) without
        losing data: what only they hold moves to the others first; then they close (nannies
        do not restart them). ``{address: worker info}`` of those retired."""
        if kwargs:
            raise TypeError(
                f"retire_workers does not take Dask's {sorted(kwargs)} on storied: name the "
                "workers (addresses or names) instead"
            )
        named = worker_restrictions(workers)
        return self._sync(
            self._request,
            "retire-workers",
            # an empty list retires no one; only None lets the scheduler choose
            workers=[] if workers is not None and named is None else named,
            close_workers=bool(close_workers),
            remove=bool(remove),
        )

    def restart(self, timeout: float | str | None = None, wait_for_workers: bool = True) -> Any:
        """Restart every worker (through its nanny; those without one are closed, and
        replaced if this client's cluster is a LocalCluster) and forget every task: all
        futures are cancelled. Returns once the workers are back (``wait_for_workers``)."""
        seconds = self._restart_timeout("restart", timeout)
        return self._sync(self._restart, seconds, bool(wait_for_workers))

    async def _restart(self, timeout: float, wait_for_workers: bool) -> None:
        reply = await self._request("restart", timeout=timeout, wait_for_workers=wait_for_workers)
        replace = getattr(self.cluster, "_replace_workers", None)
        if reply["closed"] and replace is not None:
            await _on_loop(getattr(self.cluster, "loop", None), replace(reply["closed"]))
        if wait_for_workers:
            await self._wait_for_workers(reply["workers"], timeout)  # type: ignore[attr-defined]

    def restart_workers(
        self,
        workers: list[str],
        timeout: float | str | None = None,
        raise_for_error: bool = True,
    ) -> Any:
        """Restart ``workers`` (addresses or names) through their nannies, as Dask's; unlike
        ``restart``, tasks are kept (what they held is recomputed or fetched from a copy).
        ``{worker as given: "OK" or "timed out"}``; with ``raise_for_error``, ``TimeoutError``
        if any is not back within ``timeout``. ``ValueError`` if one has no nanny."""
        if isinstance(workers, str) or not isinstance(workers, list | tuple | set):
            raise TypeError(
                f"restart_workers takes a list of worker addresses or names, not {workers!r}"
            )
        seconds = self._restart_timeout("restart_workers", timeout)
        named = [str(worker) for worker in workers]
        return self._sync(self._restart_workers, named, seconds, bool(raise_for_error))

    async def _restart_workers(
        self, workers: list[str], timeout: float, raise_for_error: bool
    ) -> dict[str, str]:
        out = await self._request("restart-workers", workers=workers, timeout=timeout)
        if raise_for_error and any(status != "OK" for status in out.values()):
            raise TimeoutError(f"workers not back within {timeout}s: {out}")
        return out

    def _restart_timeout(self, method: str, timeout: float | str | None) -> float:
        """Seconds to wait for restarted workers (None: Dask's default)."""
        seconds = (
            self._timeout * RESTART_TIMEOUT_FACTOR
            if timeout is None
            else config.parse_timedelta(timeout)
        )
        if not seconds or seconds < 0:
            raise ValueError(f"{method}'s timeout must be a positive duration, not {timeout!r}")
        return seconds

    def _restarted(self) -> None:
        """The scheduler forgot every task: every future is cancelled, as in Dask."""
        with self._ref_lock:
            states = list(self._states.values())
            self._states.clear()
        for state in states:
            state.cancel()

    def upload_file(self, filename: str | os.PathLike[str], load: bool = True) -> Any:
        """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker (and those joining
        later), which puts it on ``sys.path`` and imports it; a worker's import error is
        raised here. ``{address: [modules imported]}``."""
        path = Path(filename)
        name = check_upload_name(path.name)
        data = path.read_bytes()
        logger.info("Uploading %s (%d bytes) to every worker", path, len(data))
        return self._sync(self._request, "upload-file", filename=name, data=data, load=load)

    def shutdown(self) -> Any:
        """Close the scheduler, every worker (their nannies do not restart them), this
        client, and the cluster object it was given or made."""
        if self.asynchronous:
            return self._shutdown()
        self._sync(self._request, "shutdown")
        if self.cluster is not None:
            self.cluster.close()
        return self.close()  # type: ignore[attr-defined]

    async def _shutdown(self) -> None:
        await self._request("shutdown")
        if self.cluster is not None:
            await self.cluster.close()
        await self._close()  # type: ignore[attr-defined]


def _keys(futures: Any) -> list[str]:
    """The keys of futures, keys, and collections backed by futures (as Dask's who_has)."""
    items = futures if isinstance(futures, list | tuple | set | frozenset) else [futures]
    keys = []
    for item in items:
        if isinstance(item, Future):
            keys.append(item.key)
        elif isinstance(item, str):
            keys.append(item)
        elif held := futures_of(item):
            keys.extend(future.key for future in held)
        else:
            raise TypeError(
                f"who_has takes futures, keys or collections persisted on the cluster, "
                f"not {type(item).__name__}"
            )
    return keys


async def _on_loop(loop: asyncio.AbstractEventLoop | None, coro: Any) -> Any:
    """Await ``coro`` on ``loop`` (a cluster's own loop thread), or here if that is this one."""
    if loop is None or loop is asyncio.get_running_loop():
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
