"""``worker.shared-memory``: ``true`` (on), ``false`` (off) or ``"auto"``.

``"auto"`` is on where shared memory can carry a worker's large results: ``/dev/shm`` is a
tmpfs (memory, not a disk), this process may write there, and it has room free for the
worker's pool (``worker.shared-memory-pool``) plus ``RESULT_ROOM`` for the results beyond it.
Docker's default ``/dev/shm`` (64 MiB) has not: there a worker stays on TCP and says so once,
at INFO. ``true`` turns it on whatever ``/dev/shm`` is (a result that does not fit stays in
private memory: ``storied.shm.results``). Either way a worker writes results into segments only
once it knows a process of its host may read them (``SharedResults.peers_on_host``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from storied import config
from storied.shm import segments

AUTO = "auto"
MIB = 2**20
#: with ``"auto"``, the room ``/dev/shm`` must have beyond the pool: a 100 MB result and more
RESULT_ROOM = 128 * MIB
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Settings:
    """The ``worker.shared-memory*`` settings, checked."""

    #: True (on), False (off) or ``"auto"``
    mode: bool | str
    #: the least size of an out-of-band buffer that goes into a segment
    threshold: int
    #: the most bytes of segments per worker, or None
    limit: int | None
    #: the most bytes of released results' segments a worker keeps for its next results
    pool: int

    def off_reason(self) -> str | None:
        """With ``"auto"``, why it leaves shared memory off on this host; None otherwise."""
        return why_not_auto(self.pool) if self.mode == AUTO else None

    def enabled_here(self) -> bool:
        """Whether a worker of this host with these settings uses shared memory."""
        return self.mode is not False and self.off_reason() is None


def configured() -> Settings:
    """``worker.shared-memory``, ``worker.shared-memory-threshold``,
    ``worker.shared-memory-limit`` and ``worker.shared-memory-pool``, checked."""
    mode = config.get("worker.shared-memory")
    if not (isinstance(mode, bool) or mode == AUTO):
        raise ValueError(f'config worker.shared-memory must be true, false or "auto", not {mode!r}')
    sizes = []
    for name in ("threshold", "limit", "pool"):
        value = config.get(f"worker.shared-memory-{name}")
        try:
            sizes.append(None if value is None else config.parse_bytes(value))
        except ValueError as exc:
            raise ValueError(f"config worker.shared-memory-{name}: {exc}") from None
    threshold, limit, pool = sizes
    return Settings(mode, threshold or 0, limit, pool or 0)


def _unescape(field: str) -> str:
    """A path as ``/proc/self/mountinfo`` writes it (spaces and the like as octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def filesystem_type(path: str, mountinfo: str = MOUNTINFO) -> str | None:
    """The type of the filesystem ``path`` is on (``"tmpfs"``, ``"ext4"``...), from the
    mount table (``mountinfo``); None where it cannot be told. Of mounts stacked on one
    point, the last one counts (it is the one seen)."""
    path = os.path.realpath(path)
    try:
        with open(mountinfo) as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    found, depth = None, -1
    for line in lines:
        mount, _, after = line.partition(" - ")
        fields, kind = mount.split(), after.split()
        if len(fields) < 5 or not kind:
            continue
        point = _unescape(fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= depth:
            found, depth = kind[0], len(point)
    return found


def why_not_auto(pool_bound: int) -> str | None:
    """Why ``"auto"`` leaves shared memory off on this host, for a worker whose pool may hold
    ``pool_bound`` bytes; None if it turns it on."""
    directory = segments.DIRECTORY
    if segments.host_id() is None:
        return f"{directory} is missing or not writable"
    kind = filesystem_type(directory)
    if kind != "tmpfs":
        return f"{directory} is not a tmpfs (it is {kind or 'of an unknown type'})"
    free, needed = segments.free_bytes(), pool_bound + RESULT_ROOM
    if free < needed:
        return (
            f"{directory} has {free / MIB:,.0f} MiB free, less than the pool "
            f"(worker.shared-memory-pool, {pool_bound / MIB:,.0f} MiB) plus "
            f"{RESULT_ROOM / MIB:,.0f} MiB for results"
        )
    return None
