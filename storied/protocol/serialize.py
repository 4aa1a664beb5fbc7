"""Serialization: msgpack for control messages, cloudpickle for functions and data.

Functions and arguments are pickled once on the client; references to other tasks' results
(futures) are written as pickle persistent ids, so a worker substitutes the values while
unpickling, wherever in the arguments they sit.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle
import msgpack

PICKLE_PROTOCOL = 5
_packer_options = {"use_bin_type": True}
_unpacker_options = {"raw": False, "strict_map_key": False, "use_list": True}


def dumps(msg: Any) -> bytes:
    """Encode a control message."""
    return msgpack.packb(msg, **_packer_options)


def loads(payload: bytes) -> Any:
    """Decode a control message; raises ``ValueError`` on malformed input."""
    try:
        return msgpack.unpackb(payload, **_unpacker_options)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"malformed message: {exc}") from exc


def plain_copy(msg: Any) -> Any:
    """A deep copy of a msgpack-serializable value, exactly as a receiver will see it.

    Taken when an event is logged, so changing the object afterwards cannot change the event.
    """
    return msgpack.unpackb(msgpack.packb(msg, **_packer_options), **_unpacker_options)


class _TaskRefPickler(cloudpickle.Pickler):
    """Records the key of every task reference it meets and writes it as a persistent id."""

    def __init__(self, file: io.BytesIO, is_ref: Callable[[Any], str | None]) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self._is_ref = is_ref
        self.refs: list[str] = []

    def persistent_id(self, obj: Any) -> str | None:
        key = self._is_ref(obj)
        if key is not None:
            self.refs.append(key)
        return key


_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


def dumps_with_refs(obj: Any, is_ref: Callable[[Any], str | None]) -> tuple[bytes, list[str]]:
    """Pickle ``obj``; objects for which ``is_ref`` returns a key become references to it.

    ``obj`` is usually ``(args, kwargs)`` of one task: when those hold only plain scalars, the
    C pickler does the job several times faster than building a reference-tracking pickler.
    """
    if type(obj) is tuple and len(obj) == 2:
        args, kwargs = obj
        if type(args) is tuple and not kwargs and all(type(arg) in _PLAIN_TYPES for arg in args):
            return pickle.dumps(obj, protocol=PICKLE_PROTOCOL), []
    buffer = io.BytesIO()
    pickler = _TaskRefPickler(buffer, is_ref)
    try:
        pickler.dump(obj)
    except Exception as exc:
        raise TypeError(f"could not serialize {_describe(obj)}: {exc}") from exc
    return buffer.getvalue(), list(dict.fromkeys(pickler.refs))


class _TaskRefUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: Mapping[str, Any]) -> None:
        super().__init__(file)
        self._values = values

    def persistent_load(self, pid: Any) -> Any:
        return self._values[pid]


def loads_with_refs(payload: bytes, values: Mapping[str, Any]) -> Any:
    """Unpickle ``payload``, replacing each task reference by its value from ``values``."""
    return _TaskRefUnpickler(io.BytesIO(payload), values).load()


def pickle_dumps(obj: Any) -> bytes:
    """Pickle data or a function; raises ``TypeError`` saying what could not be serialized."""
    try:
        return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"could not serialize {_describe(obj)}: {exc}") from exc


def dumps_result(obj: Any) -> bytes:
    """Pickle a task's result: plain values through the C pickler, the rest with cloudpickle."""
    if type(obj) in _PLAIN_TYPES:
        return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    return pickle_dumps(obj)


def pickle_loads(payload: bytes) -> Any:
    return pickle.loads(payload)


def token(*parts: bytes) -> str:
    """A 32-hex-digit digest, used to build deterministic task keys and function ids."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _describe(obj: Any) -> str:
    kind = type(obj)
    return f"object of type {kind.__module__}.{kind.__qualname__}"


def typename(obj: Any) -> str:
    """``builtins.int`` style name, as Dask shows it in a future's repr."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"
