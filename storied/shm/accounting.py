"""A process's memory as the memory limits see it: its RSS plus the bytes of the shared-memory
segments it made and still holds that its RSS does not show.

What Linux reports, measured here (a 100 MiB segment in ``/dev/shm``, Linux 6, psutil 7):

- written with ``write(2)``: in no process's RSS (``VmRSS``, ``RssShmem`` of
  ``/proc/<pid>/status`` and psutil's ``rss`` unchanged), yet 100 MiB of the host's memory;
- mapped copy-on-write, untouched: still in no RSS;
- every page read: ``RssShmem`` and ``VmRSS`` (psutil's ``rss``; its ``shared`` too, which adds
  file-backed pages) grow by 100 MiB; psutil's ``memory_full_info()`` counts them in ``uss``
  and ``pss`` as well, but reads ``/proc/<pid>/smaps`` (about 50 ms for a worker with numpy
  and pandas loaded: too slow for a check every 100 ms);
- half the pages written (copied on write): ``RssShmem`` falls to 50 MiB, ``RssAnon`` grows by
  50 MiB (the private copies), ``VmRSS`` stays.

So the pages of its segments a process has touched are in its RSS as ``RssShmem``, and the
rest are nowhere. A process holding ``held`` bytes of segments has ``held - RssShmem`` of them
outside its RSS (never less than 0): exact while the shared memory it has touched is its own
segments; pages it touched of a peer's segments (a fetched input) count in its RSS and hide as
many of its own untouched bytes, so it may read low by at most those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil

from storied.shm import segments


@dataclass(frozen=True)
class Usage:
    """A process's memory: ``rss``, and ``shm``, the bytes of its own shared-memory segments
    that ``rss`` does not show."""

    rss: int
    shm: int

    @property
    def total(self) -> int:
        """What ``spill``, ``pause`` and ``terminate`` compare with the memory limit."""
        return self.rss + self.shm


def resident_shared_memory(pid: int | None = None) -> int:
    """Bytes of shared memory (tmpfs, ``/dev/shm``) resident in process ``pid``'s RSS (this
    process by default): ``RssShmem``, 0 where Linux does not say."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as file:
            for line in file:
                if line.startswith("RssShmem:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def usage(process: psutil.Process, held: int) -> Usage:
    """``process``'s memory, when it holds ``held`` bytes of segments of its own."""
    rss = process.memory_info().rss
    if not held:
        return Usage(rss, 0)
    pid = None if process.pid == os.getpid() else process.pid
    return Usage(rss, max(0, held - resident_shared_memory(pid)))


def usage_of(process: psutil.Process) -> Usage:
    """The memory of another process (a nanny's worker): its segments found by the pid in
    their names."""
    return usage(process, segments.bytes_of(process.pid))
