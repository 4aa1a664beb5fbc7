"""``x.compute()`` and ``dask.compute(x)`` run on the current storied client.

As dask.distributed's Client does, a default client sets dask's ``scheduler`` setting (here to
``get_on_default_client``); when the last default client closes, the setting it replaced comes
back.

dask.dataframe shuffles with the task-based shuffle on storied: left unset, dask picks its
single-machine ``disk`` shuffle (partd files that other hosts cannot see), or ``p2p`` when a
dask.distributed client is also open (which needs dask.distributed's workers). A shuffle method
the user set is kept.
"""

from __future__ import annotations

import importlib.util
from typing import Any

_NOT_SAVED = object()
_replaced: Any = _NOT_SAVED
#: whether storied set ``dataframe.shuffle.method`` (and so takes it back)
_set_shuffle_method = False
SHUFFLE_METHOD = "tasks"


def _dask_config() -> Any:
    if importlib.util.find_spec("dask") is None:
        return None
    try:
        import dask.config
    except ImportError:
        return None
    return dask.config


def client_became_default() -> None:
    """Point dask's scheduler setting at the default storied client (if dask is installed)."""
    global _replaced, _set_shuffle_method
    dask_config = _dask_config()
    if dask_config is None:
        return
    if dask_config.get("dataframe.shuffle.method", None) is None:
        dask_config.set({"dataframe.shuffle.method": SHUFFLE_METHOD})
        _set_shuffle_method = True
    current = dask_config.get("scheduler", None)
    if current is get_on_default_client:
        return
    _replaced = current
    dask_config.set(scheduler=get_on_default_client)


def no_default_client() -> None:
    """Give dask back the scheduler (and shuffle method) setting storied replaced."""
    global _replaced, _set_shuffle_method
    dask_config = _dask_config()
    if _set_shuffle_method and dask_config is not None:
        if dask_config.get("dataframe.shuffle.method", None) == SHUFFLE_METHOD:
            dask_config.set({"dataframe.shuffle.method": None})
        _set_shuffle_method = False
    if _replaced is _NOT_SAVED:
        return
    if dask_config is not None and dask_config.get("scheduler", None) is get_on_default_client:
        dask_config.set(scheduler=_replaced)
    _replaced = _NOT_SAVED


def get_on_default_client(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """What dask calls to compute: the graph runs on the default storied client."""
    return _default_sync_client().get(dsk, keys, **kwargs)


def _default_sync_client() -> Any:
    from storied.client.current import global_client

    client = global_client()
    if client is None:
        raise RuntimeError("no storied client is open: create a Client first")
    if client.asynchronous:
        raise RuntimeError(
            "the default storied client is asynchronous: use `await client.compute(x)` "
            "instead of x.compute() or dask.compute(x)"
        )
    return client


def persist_on_default_client(collections: Any, **kwargs: Any) -> Any:
    """What dask calls for ``x.persist()`` / ``dask.persist(x)``: collections backed by futures
    on the default storied client, as on a dask.distributed client, rather than computed here.
    (dask asks the scheduler setting for a ``persist`` of its own.)"""
    return _default_sync_client().persist(collections, **kwargs)


get_on_default_client.persist = persist_on_default_client  # type: ignore[attr-defined]
