"""Results handed over through shared memory between processes of one host.

A worker with peers on its host (``worker.shared-memory``) writes each large out-of-band
buffer of a finished task's result into a segment of its own, once, and from then on holds
the result as views of those segments (``SharedResults.publish``): the memory is held once.
A fetch from the same host (``request_data``, for peers and clients alike) gets the segments'
names instead of their bytes and maps them copy-on-write, so a task changing its input changes
only its own pages, as with a copy over TCP. A segment the reader cannot map (unlinked
meanwhile, another user's) is fetched again over TCP. The producer unlinks a key's segments
when it releases the key; mappings live on with their holders.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from storied import config
from storied.comm import ConnectionPool
from storied.protocol.serialize import Pickled, pickle_loads
from storied.shm import segments

logger = logging.getLogger("storied.worker")

#: a segment of a result: the index of its buffer among the pickle's buffers, name, size
Segment = tuple[int, str, int]


def configured() -> tuple[bool, int]:
    """``worker.shared-memory`` and ``worker.shared-memory-threshold`` (bytes), checked."""
    enabled = config.get("worker.shared-memory")
    if not isinstance(enabled, bool):
        raise ValueError(f"config worker.shared-memory must be true or false, not {enabled!r}")
    try:
        threshold = config.parse_bytes(config.get("worker.shared-memory-threshold"))
    except ValueError as exc:
        raise ValueError(f"config worker.shared-memory-threshold: {exc}") from None
    return enabled, threshold


class SharedResults:
    """One worker's results in shared memory: which segments hold each key's buffers."""

    def __init__(self, peers_on_host: bool) -> None:
        enabled, self.threshold = configured()
        #: this host's id, or None: shared memory is off here (by config, or unavailable)
        self.host = segments.host_id() if enabled else None
        #: whether a process on this host may read our results (then they go to segments)
        self.peers_on_host = peers_on_host
        self._held: dict[str, tuple[Pickled, list[Segment]]] = {}
        self._lock = threading.Lock()
        self._warned = False

    @property
    def keys(self) -> list[str]:
        return list(self._held)

    @property
    def held_bytes(self) -> int:
        """The bytes of the segments held now (memory that the worker's RSS may not show)."""
        with self._lock:
            return sum(size for _, held in self._held.values() for _, _, size in held)

    def same_host(self, host: Any) -> bool:
        """Whether a requester naming ``host`` shares our memory; seeing one, we know we have
        peers here and put results in segments from now on."""
        if self.host is None or host != self.host:
            return False
        self.peers_on_host = True
        return True

    def wants(self, size: int) -> bool:
        """Whether a result of ``size`` bytes may have buffers worth putting in segments."""
        return self.host is not None and self.peers_on_host and size >= self.threshold

    def publish(self, key: str, value: Any, pickled: bytes | Pickled) -> tuple[Any, Pickled] | None:
        """Put the large buffers of ``key``'s result in segments (in a task's thread); the
        value rebuilt on them and its pickle, or None where the result stays as it is. A top
        level ``bytes`` or ``bytearray`` stays: Python cannot make one around mapped memory, so
        it would be held twice."""
        if (
            self.host is None
            or not self.peers_on_host
            or type(pickled) is not Pickled
            or type(value) in (bytes, bytearray)
        ):
            return None
        large = [
            (index, view)
            for index, buffer in enumerate(pickled.buffers)
            if (view := memoryview(buffer)).nbytes >= self.threshold
        ]
        if not large:
            return None
        written: list[Segment] = []
        try:
            buffers = list(pickled.buffers)
            for index, view in large:
                name = segments.segment_name(key)
                segments.write_segment(name, view)
                written.append((index, name, view.nbytes))
                buffers[index] = segments.map_segment(name, view.nbytes)
            shared = Pickled(pickled.header, buffers)
            rebuilt = pickle_loads(shared)
        except Exception as exc:  # no room in /dev/shm, say: keep the result as it is
            segments.unlink([name for _, name, _ in written])
            # once at WARNING: a full /dev/shm (64 MiB in a container, say) would repeat it
            logger.log(
                logging.INFO if self._warned else logging.WARNING,
                "Result %s stays out of shared memory: %r",
                key,
                exc,
            )
            self._warned = True
            return None
        with self._lock:
            previous = self._held.pop(key, None)
            self._held[key] = (shared, written)
        if previous is not None:
            segments.unlink([name for _, name, _ in previous[1]])
        return rebuilt, shared

    def release(self, keys: list[str]) -> None:
        """Unlink the segments of ``keys`` (released, spilled or lost)."""
        with self._lock:
            entries = [entry for key in keys if (entry := self._held.pop(key, None))]
        for _, held in entries:
            segments.unlink([name for _, name, _ in held])

    def release_all(self) -> None:
        self.release(self.keys)

    def handover(self, key: str) -> list[Any] | None:
        """What a same-host reader gets for ``key`` instead of its bytes: the pickle with its
        small buffers, and the segments of the large ones; None if ``key`` has none."""
        entry = self._held.get(key)
        if entry is None:
            return None
        shared, held = entry
        in_segments = {index for index, _, _ in held}
        small = [b for index, b in enumerate(shared.buffers) if index not in in_segments]
        return [Pickled(shared.header, small), [list(segment) for segment in held]]


def _mapped(handover: Any) -> Pickled:
    """The pickle of a handover with its segments mapped in place of their buffers."""
    pickled, held = handover
    if type(pickled) is not Pickled or not isinstance(held, list):
        raise ValueError(f"malformed shared-memory handover: {handover!r}")
    buffers = list(pickled.buffers)
    for index, name, size in sorted(held):
        buffers.insert(index, segments.map_segment(name, size))
    return Pickled(pickled.header, buffers)


@dataclass
class Fetched:
    """The data a ``get_data`` request brought: ``data`` (key -> pickle, large buffers mapped
    where they came through shared memory), the keys that did (``shm``) and those that were
    fetched again over TCP because their segments could not be mapped (``fallback``)."""

    data: dict[str, Any]
    errors: dict[str, str]
    shm: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)


async def request_data(
    pool: ConnectionPool, address: str, keys: list[str], timeout: float | None = None
) -> Fetched:
    """Fetch ``keys`` from the worker at ``address``, through shared memory where it shares
    our host and holds them there, over TCP otherwise."""
    msg: dict[str, Any] = {"op": "get_data", "keys": keys}
    host = segments.host_id()
    if host is not None:
        msg["host"] = host
    reply = await pool.request(address, msg, timeout=timeout)
    fetched = Fetched(dict(reply.get("data") or {}), dict(reply.get("errors") or {}))
    for key, handover in (reply.get("shared") or {}).items():
        try:
            fetched.data[key] = _mapped(handover)
            fetched.shm.append(key)
        except (OSError, ValueError, TypeError) as exc:
            logger.info(
                "Fetching %s from %s over TCP: its shared memory is gone (%r)", key, address, exc
            )
            fetched.fallback.append(key)
    if fetched.fallback:
        again = await pool.request(
            address, {"op": "get_data", "keys": fetched.fallback}, timeout=timeout
        )
        fetched.data.update(again.get("data") or {})
        fetched.errors.update(again.get("errors") or {})
    return fetched
