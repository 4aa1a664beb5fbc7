"""Results handed over through shared memory between processes of one host.

A worker holds a finished task's result in its private memory, as with shared memory off, and
reports it done at once. A result that never moves costs nothing more. When a process of the
host (a peer's fetch or a client's gather, ``request_data``) first asks for a large result,
the worker copies its large out-of-band buffers into segments of their own right then, in the
thread that answers it (``ready``; a second reader meanwhile helps with the same write), and
holds the result as views of its segments from then on (``on_written``): the memory is held
once again. That first reader, and every later one, gets the segments' names instead of their
bytes and maps them copy-on-write, so a task changing its input changes only its own pages, as
with a copy over TCP. A segment the reader cannot map (unlinked meanwhile, another user's) is
fetched again over TCP. When the producer releases a key, its segments go to the worker's pool
(``storied.shm.pool``), to take the next results at memcpy speed, or are unlinked; mappings
live on with their holders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from storied.comm import ConnectionPool
from storied.protocol.serialize import Pickled, dumps_data, pickle_loads
from storied.shm import segments, setting
from storied.shm.pool import MAX_SEGMENTS, PooledSegment, SegmentPool
from storied.shm.writer import BackgroundWriter, SegmentWrite

logger = logging.getLogger("storied.worker")

#: threads copying a result into segments while a reader waits: one memcpy stream does not
#: fill the memory bus, so two finish the copy sooner (the waiting reader idles meanwhile)
COPY_THREADS = 2

#: a segment of a result: the index of its buffer among the pickle's buffers, name, size
Segment = tuple[int, str, int]


class NoRoom(OSError):
    """The segments of a result would pass ``worker.shared-memory-limit`` or the free space of
    ``/dev/shm``."""


class SharedResults:
    """One worker's results in shared memory: which segments hold each key's buffers, and the
    writes under way. ``on_written(key, private, shared)`` is called (in the writing thread)
    when ``key``'s segments are complete: ``shared`` is the result rebuilt on them, to hold
    instead of ``private``. ``record(msg)`` puts what happened on the record (topic
    ``transfer``: ``shared``, ``kept-private``)."""

    def __init__(
        self,
        peers_on_host: bool,
        on_written: Callable[[str, Any, Any], None] | None = None,
        record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        settings = setting.configured()
        self.threshold, self.limit = settings.threshold, settings.limit
        #: why ``"auto"`` left shared memory off on this host (``announce``), or None
        self.off_reason = settings.off_reason()
        enabled = settings.mode is not False and self.off_reason is None
        #: this host's id, or None: shared memory is off here (by config, or unavailable)
        self.host = segments.host_id() if enabled else None
        #: segments of released results, kept for the next ones
        self.pool = SegmentPool(settings.pool if self.host is not None else 0)
        #: whether a process on this host may read our results (then they go to segments)
        self.peers_on_host = peers_on_host
        self.on_written = on_written
        self.record = record
        self._held: dict[str, tuple[Pickled, list[Segment]]] = {}
        #: name -> the pooled segment a held result was copied into, with its write mapping
        self._written: dict[str, PooledSegment] = {}
        self._writing: dict[str, SegmentWrite] = {}
        #: keys whose results stay in private memory (nothing to share, no room)
        self._private: set[str] = set()
        self._lock = threading.Lock()
        self._writer = BackgroundWriter()
        self._warned = False

    def announce(self, worker: str) -> None:
        """(``worker``, once started) Say why ``"auto"`` left shared memory off, if it did:
        once, at INFO, and as a ``transfer`` event (``tcp-only``)."""
        if self.off_reason is None:
            return
        logger.info(
            'Large results go over TCP: worker.shared-memory is "auto" and %s', self.off_reason
        )
        self._record(action="tcp-only", worker=worker, reason=self.off_reason)

    @property
    def keys(self) -> list[str]:
        with self._lock:
            return [*self._held, *self._writing]

    @property
    def writing(self) -> list[str]:
        """The keys whose results are being moved into segments now."""
        with self._lock:
            return list(self._writing)

    @property
    def held_bytes(self) -> int:
        """The bytes of the segments held, pooled or being written now (memory that the
        worker's RSS may not show; during a write the private copy is in RSS too: both
        count)."""
        with self._lock:
            held = sum(size for _, segs in self._held.values() for _, _, size in segs)
            writing = sum(write.nbytes for write in self._writing.values())
        return held + writing + self.pool.nbytes

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

    async def ready(self, values: dict[str, Any], timeout: float) -> None:
        """Before answering a reader of this host: the segments of these results (large ones,
        in memory), written now where no reader had them written yet (helping a write another
        reader started); at most ``timeout`` seconds (then what is not ready goes over
        TCP)."""
        writes = []
        with self._lock:
            for key, value in values.items():
                if key in self._held or key in self._private:
                    continue
                write = self._writing.get(key)
                if write is None:
                    write = self._writing[key] = SegmentWrite(key, value, self.pool)
                writes.append(write)
        if not writes:
            return
        loop = asyncio.get_running_loop()
        helping = asyncio.gather(
            *(loop.run_in_executor(None, self._help, writes) for _ in range(COPY_THREADS))
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(helping, timeout)

    def _help(self, writes: list[SegmentWrite]) -> None:
        for write in writes:
            self._work(write)
            write.finished.wait()

    def _work(self, write: SegmentWrite) -> None:
        """Write every chunk of ``write`` not written yet; the last to write finishes it."""
        try:
            if not write.prepare(self._plan):
                self._settle(write)
            elif write.run():
                self._finish(write)
        except Exception as exc:  # no room left in /dev/shm, say: the result stays private
            self._settle(write, exc)

    def _plan(self, value: Any) -> tuple[Pickled, dict[int, memoryview]] | None:
        """The pickle of a result and its buffers to put in segments; None if it has none
        worth it. A top level ``bytes`` or ``bytearray`` stays: Python cannot make one around
        mapped memory, so it would be held twice. ``NoRoom`` if they do not fit."""
        if type(value) in (bytes, bytearray):
            return None
        try:
            pickled = dumps_data(value)
        except TypeError:
            return None  # it fails where it is fetched, as any result that cannot be pickled
        if type(pickled) is not Pickled:
            return None
        large = {
            index: view
            for index, buffer in enumerate(pickled.buffers)
            if (view := memoryview(buffer)).nbytes >= self.threshold
        }
        if not large:
            return None
        size = sum(view.nbytes for view in large.values())
        if self.limit is not None and self.held_bytes + size > self.limit:
            self.pool.trim(self.held_bytes + size - self.limit)
            if self.held_bytes + size > self.limit:
                raise NoRoom(f"{size} bytes would pass worker.shared-memory-limit ({self.limit})")
        if size > segments.free_bytes():
            self.pool.trim(size - segments.free_bytes())
            free = segments.free_bytes()
            if size > free:
                raise NoRoom(f"{size} bytes do not fit in {segments.DIRECTORY} ({free} free)")
        return pickled, large

    def _finish(self, write: SegmentWrite) -> None:
        """All of ``write`` is in its segments: hold the result there from now on."""
        assert write.pickled is not None
        buffers = list(write.pickled.buffers)
        for index, name in write.names.items():
            buffers[index] = segments.map_segment(name, write.sizes[index])
        shared = Pickled(write.pickled.header, buffers)
        rebuilt = pickle_loads(shared)
        held = [(index, name, write.sizes[index]) for index, name in write.names.items()]
        reused = write.reused_bytes
        with self._lock:
            current = self._writing.get(write.key) is write
            # each kept mapping holds a descriptor: as many as the pool may hold, no more
            keep = len(self._written) + len(write.reused) <= MAX_SEGMENTS
            if current:
                del self._writing[write.key]
                self._held[write.key] = (shared, held)
                if keep:
                    self._written.update({write.names[i]: s for i, s in write.reused.items()})
        private = write.value
        write.done_with_value()
        write.finished.set()
        if not (current and keep):
            write.close_reused()
        if not current:  # released meanwhile
            segments.unlink(list(write.names.values()))
            return
        if self.on_written is not None:
            self.on_written(write.key, private, rebuilt)
        self._record(
            action="shared",
            key=write.key,
            nbytes=write.nbytes,
            reused=reused,
            seconds=time.monotonic() - write.started,
        )

    def _settle(self, write: SegmentWrite, exc: BaseException | None = None) -> None:
        """``write`` is over without segments: the result stays in private memory."""
        with self._lock:
            current = self._writing.get(write.key) is write
            if current:
                del self._writing[write.key]
                self._private.add(write.key)
        if not current:
            return  # finished by another thread, or released (its segments unlinked then)
        segments.unlink(write.cancel())
        write.done_with_value()
        write.close_reused()
        if exc is not None:
            # once at WARNING: a full /dev/shm (64 MiB in a container, say) would repeat it
            logger.log(
                logging.INFO if self._warned else logging.WARNING,
                "Result %s stays out of shared memory: %r",
                write.key,
                exc,
            )
            self._warned = True
            self._record(action="kept-private", key=write.key, reason=str(exc))

    def _record(self, **msg: Any) -> None:
        if self.record is not None:
            self.record(msg)

    def _drop(
        self,
        write: SegmentWrite | None,
        held: tuple[Pickled, list[Segment]] | None,
        reuse: bool,
    ) -> None:
        if write is not None:
            segments.unlink(write.cancel())
            write.done_with_value()
            write.close_reused()
        if held is None:
            return
        with self._lock:
            written = {name: s for _, name, _ in held[1] if (s := self._written.pop(name, None))}
        if not reuse:
            for segment in written.values():
                segment.close()
            segments.unlink([name for _, name, _ in held[1]])
            return
        names_and_sizes = [(name, size) for _, name, size in held[1]]
        for segment in self.pool.give(names_and_sizes, written):
            self._writer.put(partial(self.pool.map, segment))

    def release(self, keys: Iterable[str], reuse: bool = True) -> None:
        """Free the segments of ``keys`` (released or lost: pooled or unlinked), stopping
        their writes. ``reuse=False`` (a spill, which must free memory) unlinks them: pooled,
        they would keep the memory the spill was for."""
        keys = list(keys)
        with self._lock:
            dropped = [(self._writing.pop(key, None), self._held.pop(key, None)) for key in keys]
            self._private.difference_update(keys)
        for write, held in dropped:
            self._drop(write, held, reuse)

    def release_all(self) -> None:
        self.release(self.keys)
        with self._lock:
            self._private.clear()

    def close(self) -> None:
        """Unlink every segment, pooled ones too, and let the background writer end."""
        self.release_all()
        self.pool.drain()
        self._writer.stop()

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
