"""Serialization: msgpack for control messages, cloudpickle for functions and data.

Functions and arguments are pickled once on the client; references to other tasks' results
(futures) are written as pickle persistent ids, so a worker substitutes the values while
unpickling, wherever in the arguments they sit.

Data (task results, scattered values, large arguments) is pickled with protocol 5 and its
large buffers kept out of band: a ``Pickled`` holds the small pickle stream and views of the
buffers (a numpy array's memory, a big ``bytes``), never copies. In a message a ``Pickled``
becomes a msgpack extension naming its buffers, which travel as raw frames beside the header
(see ``storied.protocol.frames``). Small data stays plain ``bytes`` and costs what it always did.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle
import msgpack

from storied.protocol import compression

PICKLE_PROTOCOL = 5
_packer_options = {"use_bin_type": True}
_unpacker_options = {"raw": False, "strict_map_key": False, "use_list": True}


def dumps(msg: Any) -> bytes:
    """Encode a control message."""
    return msgpack.packb(msg, **_packer_options)


def loads(payload: bytes, buffers: list[Any] | None = None) -> Any:
    """Decode a message (with the buffers that came with it); ``ValueError`` on malformed input."""
    try:
        if buffers is None:
            return msgpack.unpackb(payload, **_unpacker_options)
        return msgpack.unpackb(payload, ext_hook=_ExtHook(buffers), **_unpacker_options)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise ValueError(f"malformed message: {exc}") from exc


#: buffers (and pickle streams) of at least this size travel out of band, as raw frames
OUT_OF_BAND_MIN = 64 * 1024
_PICKLED_EXT = 1
#: a whole message whose buffers were compressed: [codec, original size or None per buffer,
#: the message's own msgpack header]
_COMPRESSED_EXT = 2
#: first buffer index, buffer count, whether the pickle stream itself is the first buffer
_PICKLED_REF = struct.Struct("!IIB")


class Pickled:
    """A protocol-5 pickle whose large buffers are kept beside it rather than inside it."""

    __slots__ = ("buffers", "header")

    def __init__(self, header: bytes, buffers: list[Any]) -> None:
        self.header = header
        self.buffers = buffers

    @property
    def nbytes(self) -> int:
        return len(self.header) + sum(memoryview(b).nbytes for b in self.buffers)

    def __repr__(self) -> str:
        return f"<Pickled {self.nbytes} bytes, {len(self.buffers)} buffers>"


def dumps_with_buffers(msg: Any) -> tuple[bytes, list[Any]]:
    """Encode a message; the buffers of any ``Pickled`` in it come back separately, uncopied.

    Messages without data take the plain msgpack path, as cheap as ``dumps``.
    """
    try:
        return msgpack.packb(msg, **_packer_options), []
    except TypeError:
        pass
    buffers: list[Any] = []

    def default(obj: Any) -> msgpack.ExtType:
        if type(obj) is not Pickled:
            raise TypeError(f"can not serialize {type(obj).__name__!r} object")
        first = len(buffers)
        # at least one buffer, so a message holding a Pickled is always a message with buffers
        header_out_of_band = len(obj.header) >= OUT_OF_BAND_MIN or not obj.buffers
        if header_out_of_band:
            buffers.append(obj.header)
        buffers.extend(obj.buffers)
        ref = _PICKLED_REF.pack(first, len(obj.buffers), header_out_of_band)
        return msgpack.ExtType(_PICKLED_EXT, ref if header_out_of_band else ref + obj.header)

    return msgpack.packb(msg, default=default, **_packer_options), buffers


def compress_buffers(header: bytes, buffers: list[Any], codec: str) -> tuple[bytes, list[Any]]:
    """A message from ``dumps_with_buffers`` with the buffers that shrink compressed by
    ``codec``; unchanged when none does. ``loads`` undoes it."""
    compressed = [compression.maybe_compress(buffer, codec) for buffer in buffers]
    if not any(compressed):
        return header, buffers
    sizes = [
        None if c is None else memoryview(b).nbytes
        for c, b in zip(compressed, buffers, strict=True)
    ]
    inner = msgpack.packb([codec, sizes, header], **_packer_options)
    outer = msgpack.packb(msgpack.ExtType(_COMPRESSED_EXT, inner), **_packer_options)
    return outer, [b if c is None else c for c, b in zip(compressed, buffers, strict=True)]


class _ExtHook:
    """Rebuilds the ``Pickled`` objects of one received message from its buffers (and first
    decompresses them, for a message sent compressed)."""

    __slots__ = ("buffers", "decompressed")

    def __init__(self, buffers: list[Any]) -> None:
        self.buffers = buffers
        self.decompressed = False

    def __call__(self, code: int, data: bytes) -> Any:
        if code == _COMPRESSED_EXT and not self.decompressed:
            return self._decompress(data)
        if code != _PICKLED_EXT or len(data) < _PICKLED_REF.size:
            raise ValueError(f"unknown extension type {code}")
        first, count, header_out_of_band = _PICKLED_REF.unpack_from(data)
        end = first + count + bool(header_out_of_band)
        if end > len(self.buffers):
            raise ValueError("a pickled value refers to buffers that did not arrive")
        if header_out_of_band:
            return Pickled(bytes(self.buffers[first]), self.buffers[first + 1 : end])
        return Pickled(data[_PICKLED_REF.size :], self.buffers[first:end])

    def _decompress(self, data: bytes) -> Any:
        self.decompressed = True  # once, for the whole message: never nested
        codec, sizes, header = msgpack.unpackb(data, **_unpacker_options)
        if not (isinstance(sizes, list) and len(sizes) == len(self.buffers)):
            raise ValueError("a compressed message does not describe each of its buffers")
        self.buffers = [
            buffer if size is None else compression.decompress(codec, buffer, size)
            for buffer, size in zip(self.buffers, sizes, strict=True)
        ]
        return msgpack.unpackb(header, ext_hook=self, **_unpacker_options)


_BYTES_LIKE = (bytes, bytearray, memoryview)


class _TaskRefPickler(cloudpickle.Pickler):
    """Records the key of every task reference it meets and writes it as a persistent id.

    Large ``bytes`` and ``bytearray`` objects (which the pickler would copy into the stream)
    and memoryviews (which it cannot pickle) become persistent ids too, holding a
    ``PickleBuffer`` that goes out of band with the other buffers (when large).
    """

    def __init__(
        self, file: io.BytesIO, is_ref: Callable[[Any], str | None], buffers: list[Any]
    ) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL, buffer_callback=_keeper(buffers))
        self._is_ref = is_ref
        self.refs: list[str] = []
        #: a bytes-like object became a persistent id: only our unpickler can read the stream
        self.wrote_buffer_ids = False

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in _BYTES_LIKE and (
            (kind is memoryview and obj.contiguous) or len(obj) >= OUT_OF_BAND_MIN
        ):
            self.wrote_buffer_ids = True
            return (kind.__name__, pickle.PickleBuffer(obj))
        key = self._is_ref(obj)
        if key is not None:
            self.refs.append(key)
        return key


def _keeper(buffers: list[Any]) -> Callable[[pickle.PickleBuffer], bool]:
    """A ``buffer_callback`` keeping large buffers out of band (small ones stay in the stream)."""

    def keep(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(view)
        return False

    return keep


_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})


def dumps_with_refs(
    obj: Any, is_ref: Callable[[Any], str | None]
) -> tuple[bytes | Pickled, list[str]]:
    """Pickle ``obj``; objects for which ``is_ref`` returns a key become references to it.

    ``obj`` is usually ``(args, kwargs)`` of one task: when those hold only small plain
    scalars, the C pickler does the job several times faster than a reference-tracking pickler.
    """
    if type(obj) is tuple and len(obj) == 2:
        args, kwargs = obj
        if type(args) is tuple and not kwargs and all(map(_small_plain, args)):
            return pickle.dumps(obj, protocol=PICKLE_PROTOCOL), []
    file = io.BytesIO()
    buffers: list[Any] = []
    pickler = _TaskRefPickler(file, is_ref, buffers)
    try:
        pickler.dump(obj)
    except Exception as exc:
        raise TypeError(f"could not serialize {_describe(obj)}: {exc}") from exc
    header = file.getvalue()
    if pickler.wrote_buffer_ids:
        return Pickled(header, buffers), list(dict.fromkeys(pickler.refs))
    return _pickled(header, buffers), list(dict.fromkeys(pickler.refs))


def _small_plain(obj: Any) -> bool:
    kind = type(obj)
    return kind in _PLAIN_TYPES and (kind is not bytes or len(obj) < OUT_OF_BAND_MIN)


def _pickled(header: bytes, buffers: list[Any]) -> bytes | Pickled:
    """Plain ``bytes`` when nothing needs to travel out of band."""
    if buffers or len(header) >= OUT_OF_BAND_MIN:
        return Pickled(header, buffers)
    return header


class _TaskRefUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, values: Mapping[str, Any], buffers: list[Any]) -> None:
        super().__init__(file, buffers=buffers)
        self._values = values

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple:
            kind, buffer = pid
            return _REBUILD_BYTES_LIKE[kind](buffer)
        return self._values[pid]


def _as_bytearray(buffer: Any) -> bytearray:
    return buffer if type(buffer) is bytearray else bytearray(buffer)


_REBUILD_BYTES_LIKE: dict[str, Callable[[Any], Any]] = {
    "bytes": bytes,
    "bytearray": _as_bytearray,
    "memoryview": memoryview,
}


def loads_with_refs(payload: bytes | Pickled, values: Mapping[str, Any]) -> Any:
    """Unpickle ``payload``, replacing each task reference by its value from ``values``."""
    if type(payload) is Pickled:
        return _TaskRefUnpickler(io.BytesIO(payload.header), values, payload.buffers).load()
    return _TaskRefUnpickler(io.BytesIO(payload), values, []).load()


def pickle_dumps(obj: Any) -> bytes:
    """Pickle data or a function; raises ``TypeError`` saying what could not be serialized."""
    try:
        return cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"could not serialize {_describe(obj)}: {exc}") from exc


def dumps_data(obj: Any) -> bytes | Pickled:
    """Pickle data (a task's result, a scattered value): small plain values through the C
    pickler, the rest with cloudpickle, large buffers out of band."""
    if _small_plain(obj):
        return pickle.dumps(obj, protocol=PICKLE_PROTOCOL)
    if type(obj) in _BYTES_LIKE:
        return dumps_with_refs(obj, _no_ref)[0]
    buffers: list[Any] = []
    try:
        header = cloudpickle.dumps(obj, protocol=PICKLE_PROTOCOL, buffer_callback=_keeper(buffers))
    except Exception as exc:
        raise TypeError(f"could not serialize {_describe(obj)}: {exc}") from exc
    return _pickled(header, buffers)


def _no_ref(obj: Any) -> None:
    return None


def nbytes(payload: bytes | Pickled) -> int:
    return len(payload) if type(payload) is bytes else payload.nbytes  # type: ignore[union-attr]


def pickle_loads(payload: bytes | Pickled) -> Any:
    if type(payload) is Pickled:
        return loads_with_refs(payload, {})
    return pickle.loads(payload)


def token(*parts: bytes | Pickled) -> str:
    """A 32-hex-digit digest, used to build deterministic task keys and function ids."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        if type(part) is Pickled:
            digest.update(part.header)
            for buffer in part.buffers:  # sha1 runs faster than md5 over large data
                digest.update(hashlib.sha1(buffer, usedforsecurity=False).digest())
        else:
            digest.update(part)  # type: ignore[arg-type]
    return digest.hexdigest()


def _describe(obj: Any) -> str:
    kind = type(obj)
    return f"object of type {kind.__module__}.{kind.__qualname__}"


def typename(obj: Any) -> str:
    """``builtins.int`` style name, as Dask shows it in a future's repr."""
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"
