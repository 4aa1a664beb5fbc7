"""Clients for tasks that launch tasks: ``get_client()`` and ``worker_client()``, as in Dask.

Inside a task, ``get_client()`` is a client of the worker's scheduler with the worker's
security, made once per worker and reused by every task there (a client already in charge in
this process, connected to that scheduler, serves instead: with in-process workers that is the
user's own). Both are on the record: the worker logs events under the topics
``worker-get-client`` (a client was made for the worker, see ``storied.coordination.worker``)
and ``worker-client`` (a task entered ``worker_client()``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from storied import config
from storied.client.client import Client
from storied.client.current import global_client
from storied.worker.secede import rejoin, secede
from storied.worker.server import Worker, get_worker, task_holds_thread_slot

logger = logging.getLogger("storied.client")


def _worker_or_none() -> Worker | None:
    try:
        return get_worker()
    except ValueError:
        return None


def _connect_timeout(timeout: float | str | None) -> float:
    return config.parse_timedelta(timeout or config.get("comm.connect-timeout")) or 10.0


def get_client(address: str | None = None, timeout: float | str | None = None) -> Client:
    """The client to launch tasks with: inside a task, one connected to the worker's scheduler
    (made once per worker); elsewhere the current or default client.

    ``address`` (a scheduler address) picks a client of that scheduler, connecting a new one
    if none is in charge. ``ValueError`` outside a task when there is no client and no address.
    """
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a scheduler address (str), not {type(address).__name__}")
    worker = _worker_or_none()
    if worker is not None and address in (None, worker.scheduler_address):
        return _client_of(worker)
    client = global_client()
    if client is not None and address in (None, client.scheduler_address):
        return client
    if address is not None:
        return Client(address, timeout=_connect_timeout(timeout))
    raise ValueError("No global client found and no address provided")


def _client_of(worker: Worker) -> Client:
    """The worker's client: one in charge here for the same scheduler, else the worker's own
    (``WorkerCoordination.client``, which Variables, Locks and the rest use too)."""
    client = global_client()
    if (
        client is not None
        and not client.asynchronous  # a task runs in a thread: it needs a blocking client
        and client.scheduler_address == worker.scheduler_address
    ):
        return client
    return worker.coordination.client()


@contextlib.contextmanager
def worker_client(
    timeout: float | str | None = None, separate_thread: bool = True
) -> Iterator[Client]:
    """Inside a task: ``get_client()``, with the task seceded from the worker's thread pool
    until the block ends (``separate_thread=False``: it keeps its thread slot).

    While seceded, the tasks it launches can run on this worker's threads; on exit it waits
    for a free slot (``rejoin``) before going on.
    """
    worker = get_worker()
    client = get_client(timeout=timeout)
    seceded = separate_thread and task_holds_thread_slot()
    worker.log_event(
        "worker-client",
        {
            "action": "worker-client",
            "client": client.id,
            "key": worker.get_current_task(),
            "worker": worker.address,
            "seceded": seceded,
        },
    )
    if seceded:
        secede()
    try:
        yield client
    finally:
        if seceded:
            rejoin()
