"""Moving a result into shared-memory segments when a reader of the host first asks for it.

A finished task's result is held in the worker's private memory as with shared memory off; a
``SegmentWrite`` copies its large out-of-band buffers into segments, in chunks, done by the
threads serving the same-host readers that need the result now. Chunks go to fixed offsets, so
a thread may write a chunk another is still writing (the same bytes): a reader never waits
for a thread the kernel keeps off the CPU. A buffer that gets a pooled segment
(``storied.shm.pool``) is copied into that segment's mapping, faulted in already; one that gets
a fresh segment is written with ``pwrite``, each thread opening the segments for itself. No
thread creates a segment after the write was cancelled, so a late chunk lands in an unlinked
file, not a leak.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from storied.protocol.serialize import Pickled
from storied.shm import pool, segments

#: bytes one thread writes before looking again at what is left (and whether it was cancelled)
CHUNK = 4 * 2**20


class SegmentWrite:
    """One result (``value``) going into segments: its large out-of-band buffers, each into a
    segment of its own. ``finished`` is set once they are all written, or the write ended
    without segments (nothing to share, no room, cancelled)."""

    def __init__(self, key: str, value: Any, segment_pool: pool.SegmentPool | None = None) -> None:
        self.key = key
        self.pool = segment_pool
        #: index of a large buffer -> the pooled segment it is copied into
        self.reused: dict[int, pool.PooledSegment] = {}
        #: the result as the worker holds it (private memory), until the write is over
        self.value: Any = value
        self.pickled: Pickled | None = None
        #: index of a large buffer among the pickle's -> its size, its segment's name
        self.sizes: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._views: dict[int, memoryview] | None = None
        self._chunks: list[tuple[int, int, int]] = []
        self._done: list[bool] = []
        self._remaining = 0
        self._next = 0
        self._planned = False
        #: when the write was started
        self.started = 0.0
        self._created = False
        self._prepare_lock = threading.Lock()
        self._lock = threading.Lock()
        self.cancelled = False
        self.finished = threading.Event()

    def prepare(self, plan: Callable[[Any], tuple[Pickled, dict[int, memoryview]] | None]) -> bool:
        """Pickle the result and choose its buffers (``plan``), once, in the first thread to
        get here; whether there is anything to write."""
        with self._prepare_lock:
            if not self._planned:
                self._planned = True
                self.started = time.monotonic()
                planned = plan(self.value) if self.value is not None else None
                if planned is not None:
                    self._plan(*planned)
            return self._views is not None

    def _plan(self, pickled: Pickled, large: dict[int, memoryview]) -> None:
        chunks = [
            (index, offset, min(CHUNK, view.nbytes - offset))
            for index, view in large.items()
            for offset in range(0, view.nbytes, CHUNK)
        ]
        with self._lock:
            if self.cancelled:
                return
            self.pickled = pickled
            self.sizes = {index: view.nbytes for index, view in large.items()}
            self.names = {index: segments.segment_name(self.key) for index in large}
            self._views = large
            self._chunks = chunks
            self._done = [False] * len(chunks)
            self._remaining = len(chunks)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes.values())

    def create(self) -> bool:
        """Create the (empty) segments, once; False if the write was cancelled first."""
        with self._lock:
            if self.cancelled:
                return False
            if not self._created:
                created: list[str] = []
                try:
                    for index, name in self.names.items():
                        reused = self.pool and self.pool.take(self.sizes[index], name)
                        if reused:
                            self.reused[index] = reused
                        else:
                            segments.create_segment(name)
                        created.append(name)
                except BaseException:
                    self.close_reused()
                    segments.unlink(created)
                    raise
                self._created = True
            return True

    @property
    def reused_bytes(self) -> int:
        """The bytes of this write that went into pooled segments."""
        return sum(self.sizes[index] for index in self.reused)

    def close_reused(self) -> None:
        """Drop the pooled segments' descriptors and mappings: the write is over without
        segments to hold."""
        for segment in self.reused.values():
            segment.close()
        self.reused = {}

    def cancel(self) -> list[str]:
        """Stop the write; the segments to unlink (created so far)."""
        with self._lock:
            self.cancelled = True
            created = self._created
        self.finished.set()
        return list(self.names.values()) if created else []

    def _claim(self) -> int | None:
        """The next chunk to write: one nobody has taken; once all are taken, one not written
        yet (it may be in flight in a slower thread)."""
        with self._lock:
            if self.cancelled or self._views is None:
                return None
            if self._next < len(self._chunks):
                self._next += 1
                return self._next - 1
            return next((i for i, done in enumerate(self._done) if not done), None)

    def _complete(self, chunk: int) -> bool:
        """Mark ``chunk`` written; True for the one call that completes the write."""
        with self._lock:
            if self._done[chunk] or self.cancelled:
                return False
            self._done[chunk] = True
            self._remaining -= 1
            return self._remaining == 0

    def run(self) -> bool:
        """Write chunks until none is left for this thread; True if this call wrote the last
        one (the caller then finishes the write). ``OSError`` (no room left, say) unless the
        write was cancelled meanwhile."""
        views = self._views
        if views is None or not self.create():
            return False
        fds: dict[int, int] = {}
        last = False
        try:
            while (chunk := self._claim()) is not None:
                index, offset, length = self._chunks[chunk]
                part = views[index][offset : offset + length]
                reused = self.reused.get(index)
                mapping = reused and reused.mapping
                if not mapping or not pool.copy_into(mapping, part, offset):
                    fd = fds.get(index)
                    if fd is None:
                        fd = fds[index] = segments.open_for_writing(self.names[index])
                    segments.write_at(fd, part, offset)
                last = self._complete(chunk) or last
        except OSError:
            if self.cancelled:
                return False
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
        return last

    def done_with_value(self) -> None:
        """Drop this write's hold on the private copy (the worker holds it, or no longer);
        the pooled segments' mappings stay in ``reused``, for the result's holder to give back
        to the pool (or ``close_reused``)."""
        with self._lock:
            self.value = self.pickled = self._views = None


class BackgroundWriter:
    """A daemon thread doing jobs in turn (mapping and faulting in pooled segments, off the
    event loop), started on the first one. It keeps the process's CPU priority: at nice 19 it
    held the GIL while the kernel kept it off the CPU on a busy host, and the worker's event
    loop and tasks waited for it (making a 100 MB array took 33-93 ms instead of 27-69,
    measured)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def put(self, job: Callable[[], None]) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="storied-shm-writer", daemon=True
                )
                self._thread.start()
        self._queue.put(job)

    def stop(self) -> None:
        """Let the thread end after the jobs queued."""
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            job()
