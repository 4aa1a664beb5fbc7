"""Values kept by the scheduler for coordination primitives, and the futures inside them.

A value travels as ``{"payload": bytes, "keys": [...]}``: pickled on the client, with every
Future in it written as a reference to its key (as task arguments are), so the scheduler can
keep those keys alive and a reader gets the value back with live futures of its own client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied.client.future import Future
from storied.protocol.serialize import dumps_with_refs, loads_with_refs

if TYPE_CHECKING:
    from storied.client.client import Client


def _future_key(obj: Any) -> str | None:
    return obj.key if isinstance(obj, Future) else None


def pack_value(value: Any) -> dict[str, Any]:
    """``TypeError`` naming the type if ``value`` cannot be pickled."""
    payload, keys = dumps_with_refs(value, _future_key)
    return {"payload": payload, "keys": keys}


def unpack_value(client: Client, packed: dict[str, Any]) -> Any:
    """The value, each future in it a new Future of ``client``.

    The scheduler already wants the keys on ``client``'s behalf; asking again once the
    Futures exist brings the news of their results (sent before, the client had no state
    to put it in).
    """
    keys = packed["keys"]
    futures = {key: Future(key, client) for key in keys}
    if keys:
        client._send({"op": "client-desires-keys", "keys": keys})
    return loads_with_refs(packed["payload"], futures)
