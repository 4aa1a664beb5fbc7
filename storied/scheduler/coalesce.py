"""One ``free-keys`` message per worker per batch, instead of one per finished task.

Every task that finishes lets the scheduler release inputs it no longer needs, and each such
stimulus makes its own ``free-keys`` message to the worker holding them: a graph of N tasks
sends about N of them, each dispatched and handled on its own by the worker. Messages to a
worker leave in batches, one per loop iteration (``storied.comm.batched``); this merges the
``free-keys`` messages of a batch into the first of them, keeping each key's own stimulus id
(``stimulus_ids``), so the worker's story says the same as before.

A later ``free-keys`` moves forward past the messages in between only when none of them names
any of its keys (a ``compute-task`` of one of them, or of a task needing one): the worker then
does exactly what it would have done in the original order. A message of any other kind stops
the merging. Pure: no I/O, unit-tested directly.
"""

from __future__ import annotations

from typing import Any

#: ops sent to workers whose keys are known (``key`` and ``who_has``); others stop a merge
KNOWN_OPS = frozenset({"compute-task", "steal-request", "acquire-replicas"})


def _named_keys(msg: dict[str, Any]) -> list[str]:
    keys = list(msg.get("who_has") or ())
    if "key" in msg:
        keys.append(msg["key"])
    return keys


def coalesce_free_keys(batch: list[Any]) -> list[Any]:
    """``batch`` with its ``free-keys`` messages merged where the order allows (see module)."""
    if sum(1 for msg in batch if type(msg) is dict and msg.get("op") == "free-keys") < 2:
        return batch
    result: list[Any] = []
    #: where in ``result`` the free-keys message later ones merge into, and the keys named
    #: by the messages since it
    into: int | None = None
    named: set[str] = set()
    for msg in batch:
        op = msg.get("op") if type(msg) is dict else None
        if op == "free-keys":
            if into is not None and named.isdisjoint(msg["keys"]):
                _merge(result, into, msg)
                continue
            into, named = len(result), set()
        elif op in KNOWN_OPS:
            named.update(_named_keys(msg))
        else:
            into = None
        result.append(msg)
    return result


def _merge(result: list[Any], into: int, msg: dict[str, Any]) -> None:
    """Add ``msg``'s keys to the free-keys message at ``result[into]`` (a copy, made on the
    first merge: the original may be shared)."""
    target = result[into]
    if "stimulus_ids" not in target:
        target = result[into] = {
            "op": "free-keys",
            "keys": list(target["keys"]),
            "stimulus_id": target["stimulus_id"],
            "stimulus_ids": [target["stimulus_id"]] * len(target["keys"]),
        }
    target["keys"].extend(msg["keys"])
    target["stimulus_ids"].extend([msg["stimulus_id"]] * len(msg["keys"]))
