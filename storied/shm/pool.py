"""Segments of released results kept for the next ones, already in memory and mapped.

Copying a result into a fresh segment makes the kernel allocate every tmpfs page as it goes;
copying into a segment whose pages exist, through a mapping whose page tables are filled
already, is a plain memcpy (measured with ``bench/shm_handover.py``, 100 MB: ``pwrite`` into a
fresh segment 40 ms, into an old one 34 ms, memcpy into an old one mapped and faulted in
21 ms, memcpy within private memory 15 ms). Ray's object store gets the same by allocating
all of its memory up front; a worker here keeps up to ``worker.shared-memory-pool`` bytes of
the segments its released results leave behind instead.

A released segment is renamed at once (``storied-<pid>-<serial>-pool``: a reader that comes
late finds no segment, as when it was unlinked, and fetches over TCP), then mapped shared and
faulted in by the background writer. A reader may still map it (copy-on-write, and pages it
has not changed are the file's), so a pooled segment is only written again once no other
process has it open or mapped: a write lease (``F_SETLEASE``), which Linux grants only to the
sole holder of a file, tells. Where leases do not work the pool keeps nothing. The pool gives
its segments up at close, when the worker's memory passes ``spill`` or ``pause``, when a new
result needs the room (``worker.shared-memory-limit``, ``/dev/shm``'s free space), and after a
crash with the rest of the dead worker's segments (the pid is in the name).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import mmap
import os
import signal
import threading
from dataclasses import dataclass
from functools import cache

from storied.shm import segments

logger = logging.getLogger("storied.worker")

#: at most this many segments pooled (each holds a descriptor open)
MAX_SEGMENTS = 64
#: ``madvise`` advice that faults a range in for writing (Linux 5.14); Python 3.11 has no name
MADV_POPULATE_WRITE = 23
_serials = itertools.count()


@dataclass
class PooledSegment:
    """A segment in the pool: its name, size, a read-write descriptor and, once the background
    writer got to it, a shared mapping of all of it with its pages faulted in."""

    name: str
    size: int
    fd: int
    mapping: mmap.mmap | None = None

    def close(self) -> None:
        """Drop the descriptor (the mapping goes with its last user)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.mapping = None


def _path(name: str) -> str:
    return os.path.join(segments.DIRECTORY, name)


def take_write_lease(fd: int) -> bool:
    """Take a write lease on ``fd``'s file; False if another open file or mapping refers to
    it. Were the file opened while we hold the lease, Linux would signal us: SIGURG, which is
    ignored by default, rather than SIGIO, which would kill the worker."""
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return False
        raise
    return True


def sole_holder(fd: int) -> bool:
    """Whether no other open file (in any process) and no mapping but those made from ``fd``
    refer to its file: whether Linux grants ``fd`` a write lease (given back at once)."""
    if not take_write_lease(fd):
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True


@cache
def leases_work() -> bool:
    """Whether write leases tell here that another process maps a segment (not where
    ``/proc/sys/fs/leases-enable`` is 0, say): tried once, on a segment of our own."""
    name = f"{segments.PREFIX}{os.getpid()}-{next(_serials)}-lease-probe"
    try:
        fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except OSError:
        return False
    try:
        os.ftruncate(fd, mmap.PAGESIZE)
        reader = os.open(_path(name), os.O_RDONLY)
        mapped = mmap.mmap(reader, mmap.PAGESIZE, access=mmap.ACCESS_COPY)
        os.close(reader)
        refused = not sole_holder(fd)
        mapped.close()
        return refused and sole_holder(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
        segments.unlink([name])


def _libc_madvise() -> ctypes._CFuncPtr | None:
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


_madvise = _libc_madvise()


def address_of(buffer: mmap.mmap | memoryview) -> tuple[ctypes.Array[ctypes.c_char], int] | None:
    """A ctypes view of writable ``buffer`` (to keep while using the address: the buffer cannot
    be closed under it) and its address; None for a read-only buffer."""
    if isinstance(buffer, memoryview) and buffer.readonly:
        return None
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    return view, ctypes.addressof(view)


def copy_into(mapping: mmap.mmap, buffer: memoryview, offset: int) -> bool:
    """Copy ``buffer`` into ``mapping`` at ``offset`` without the GIL (``ctypes.memmove``);
    False if ``buffer`` is read-only (then write it with ``segments.write_at``)."""
    source = address_of(buffer.cast("B"))
    if source is None:
        return False
    target = address_of(mapping)
    assert target is not None
    ctypes.memmove(target[1] + offset, source[1], buffer.nbytes)
    return True


def fault_in(mapping: mmap.mmap) -> None:
    """Fill the page tables of a shared mapping for writing, without the GIL (a ctypes call):
    the copy into it then takes no page fault. Where the kernel cannot, the copy faults."""
    if _madvise is None:
        return
    anchor = address_of(mapping)
    if anchor is not None:
        _madvise(anchor[1], len(mapping), MADV_POPULATE_WRITE)


class SegmentPool:
    """One worker's pooled segments, at most ``bound`` bytes (0: keep none)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound if bound and leases_work() else 0
        self._segments: list[PooledSegment] = []
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(segment.size for segment in self._segments)

    def __len__(self) -> int:
        with self._lock:
            return len(self._segments)

    def give(
        self, names_and_sizes: list[tuple[str, int]], written: dict[str, PooledSegment]
    ) -> list[PooledSegment]:
        """Take in the segments of a released result, under a pool name each, or unlink those
        that do not fit; the ones taken in that have no mapping yet, for the background writer
        to ``map``. A segment the result was copied into from the pool (in ``written``, by
        name) comes back with its descriptor and mapping: mapping it again would fault in
        every page again (9 ms per 100 MB measured)."""
        unmapped = []
        for name, size in names_and_sizes:
            segment = self._admit(name, size, written.pop(name, None))
            if segment is None:
                segments.unlink([name])
            elif segment.mapping is None:
                unmapped.append(segment)
        return unmapped

    def _admit(self, name: str, size: int, written: PooledSegment | None) -> PooledSegment | None:
        with self._lock:
            held = sum(segment.size for segment in self._segments)
            if held + size > self.bound or len(self._segments) >= MAX_SEGMENTS:
                if written is not None:
                    written.close()
                return None
            pooled = f"{segments.PREFIX}{os.getpid()}-{next(_serials)}-pool"
            try:
                os.rename(_path(name), _path(pooled))
                fd = written.fd if written is not None else os.open(_path(pooled), os.O_RDWR)
            except OSError:
                if written is not None:
                    written.close()
                segments.unlink([pooled])
                return None
            segment = written or PooledSegment(pooled, size, fd)
            segment.name = pooled
            self._segments.append(segment)
            return segment

    def map(self, segment: PooledSegment) -> None:
        """(The background writer) Map a pooled segment shared and fault it in, so that the
        next result is copied into it at memcpy speed."""
        with self._lock:
            if segment not in self._segments:
                return  # taken or given up meanwhile
            fd = os.dup(segment.fd)  # its own: ``trim`` may close the segment's meanwhile
        try:
            mapping = mmap.mmap(fd, segment.size)
        except (OSError, ValueError):
            return
        finally:
            os.close(fd)
        fault_in(mapping)
        with self._lock:
            if segment in self._segments and segment.mapping is None:
                segment.mapping = mapping

    def take(self, size: int, name: str) -> PooledSegment | None:
        """The smallest pooled segment of at least ``size`` bytes that no other process holds,
        renamed ``name`` and cut to ``size``; None if none fits (write into a fresh one)."""
        with self._lock:
            for segment in sorted(self._segments, key=lambda s: s.size):
                if segment.size < size or not sole_holder(segment.fd):
                    continue
                self._segments.remove(segment)
                break
            else:
                return None
        try:
            os.rename(_path(segment.name), _path(name))
            if segment.size != size:
                os.ftruncate(segment.fd, size)
        except OSError:
            segment.close()
            segments.unlink([segment.name, name])
            return None
        # a mapping longer than the file now is still good for the first ``size`` bytes
        segment.name, segment.size = name, size
        return segment

    def trim(self, nbytes: int) -> int:
        """Unlink pooled segments, largest first, until ``nbytes`` are freed (or none is
        left); the bytes freed."""
        freed = 0
        with self._lock:
            self._segments.sort(key=lambda s: s.size)
            while self._segments and freed < nbytes:
                segment = self._segments.pop()
                segment.close()
                segments.unlink([segment.name])
                freed += segment.size
        if freed:
            logger.debug("Gave up %d bytes of pooled shared-memory segments", freed)
        return freed

    def drain(self) -> int:
        """Unlink every pooled segment; the bytes freed."""
        return self.trim(self.nbytes)
