"""Which client is in charge here: the default client and the current one, as in Dask.

The most recent client made with ``set_as_default=True`` is the default; closing it makes the
one before it the default again (a stack). ``Client.as_current()`` overrides the default for
one thread or asyncio task. Inside a task with no default in its process, the worker's client
is the default. ``default_client()`` is the single place that answers.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storied.client.client import Client

_NO_CLIENT_TEXT = (
    "No clients found\n"
    "Start a client and point it to the scheduler address\n"
    "  from storied import Client\n"
    "  client = Client('ip-addr-of-scheduler:8786')\n"
)

#: clients made with ``set_as_default=True``, oldest first; weak: a dropped client is no default
_defaults: list[weakref.ref[Client]] = []
_defaults_lock = threading.Lock()
_current: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "storied_current_client", default=None
)


def push_default(client: Client) -> None:
    with _defaults_lock:
        _defaults.append(weakref.ref(client))


def remove_default(client: Client) -> None:
    """``client`` closed: it is no longer a default, and the one before it takes over."""
    with _defaults_lock:
        _defaults[:] = [ref for ref in _defaults if ref() not in (client, None)]


def global_client() -> Client | None:
    """The current client if set, else the most recent default still open, else (in a task
    on a worker) the worker's client, else None."""
    current = _current.get()
    if current is not None and current.status not in ("closing", "closed"):
        return current
    with _defaults_lock:
        for ref in reversed(_defaults):
            client = ref()
            if client is not None and client.status not in ("closing", "closed"):
                return client
    return _task_client()


def _task_client() -> Client | None:
    """Inside a task, the client of its worker (made on first use), as Dask's worker client is
    the default in its process; None elsewhere."""
    from storied.worker.server import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return None
    return worker.coordination.client()


def default_client(c: Client | None = None) -> Client:
    """``c`` if given, else the current or default client; ``ValueError`` if there is none."""
    client = c or global_client()
    if client is None:
        raise ValueError(_NO_CLIENT_TEXT)
    return client


def current_client(allow_global: bool = True) -> Client:
    """The client of ``as_current()`` here; else, with ``allow_global``, the default one."""
    current = _current.get()
    if current is not None:
        return current
    if allow_global:
        return default_client()
    raise ValueError(
        "No current client: use `with client.as_current():`, or allow_global=True for the "
        "default client"
    )


def set_current(client: Client) -> contextvars.Token[Client | None]:
    return _current.set(client)


def reset_current(token: contextvars.Token[Client | None]) -> None:
    _current.reset(token)
