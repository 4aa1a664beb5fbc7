"""Run a failed task again in the client's own process, for a debugger, as Dask does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied.client.future import Future, wait_states
from storied.client.futures_of import futures_of
from storied.protocol.serialize import loads_with_refs, pickle_loads

if TYPE_CHECKING:
    from storied.client.client import Client


def recreate_error_locally(client: Client, obj: Any) -> Any:
    """Run here the task to blame for the first failed future in ``obj``, with its inputs
    fetched from the cluster; its exception is raised in this process.

    ``ValueError`` if no future in ``obj`` failed (it waits for them to finish first).
    """
    futures = futures_of(obj)
    if not futures:
        raise TypeError(
            "recreate_error_locally() takes a future or a collection of futures, "
            f"not {type(obj).__name__}"
        )
    client._sync_waiting(futures, wait_states, [f._state for f in futures])
    failed = [f for f in futures if f.status == "error"]
    if not failed:
        raise ValueError("No errored futures passed")
    blamed = failed[0]._state.blame or failed[0].key
    spec = client._sync(client._request, "task-spec", key=blamed)
    inputs = [Future(key, client, client._adopt(key)) for key in spec["dependencies"]]
    values = dict(zip(spec["dependencies"], client.gather(inputs), strict=True))
    func = pickle_loads(spec["function"])
    args, kwargs = loads_with_refs(spec["args"], values)
    return func(*args, **kwargs)
