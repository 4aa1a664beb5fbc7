"""Resource telemetry: what a worker uses, sampled with every heartbeat.

One sample is a flat dict (so the ledger, ``get_worker_metrics`` and ``storied top`` read it
alike); the names follow Dask's heartbeat metrics where Dask has one (``cpu``, ``memory``,
``managed_bytes``, ``spilled_bytes``; ``host_net_io``'s ``read_bps``/``write_bps`` become
``host_read_bps``/``host_write_bps``); ``shm_bytes`` is storied's own: the bytes of the
worker's shared-memory segments that ``memory`` (its RSS) does not show, counted by its memory
limits beside it. Switched off by ``worker.telemetry: false``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import psutil

from storied.shm import accounting
from storied.worker.memory import SpillBuffer

if TYPE_CHECKING:
    from storied.worker.server import Worker

logger = logging.getLogger("storied.worker")

#: the fields of a sample, in the order ``storied top`` shows them
SAMPLE_FIELDS = (
    "time",
    "cpu",
    "memory",
    "managed_bytes",
    "spilled_bytes",
    "shm_bytes",
    "sockets",
    "num_fds",
    "host_read_bps",
    "host_write_bps",
    "transfer_incoming_bytes_total",
    "transfer_outgoing_bytes_total",
    "transfer_shm_incoming_bytes_total",
    "transfer_shm_outgoing_bytes_total",
)


#: where a Linux process lists its file descriptors
_FD_DIRECTORY = "/proc/self/fd"
_HAS_FDS = os.name == "posix"


def open_sockets(process: psutil.Process) -> int:
    """Sockets the process holds open: its connections, plus its listener and the event
    loop's wake-up pair. On Linux read from its descriptors (microseconds); psutil's table of
    the host's connections, the fallback elsewhere, costs milliseconds on a busy host."""
    try:
        descriptors = os.listdir(_FD_DIRECTORY)
    except OSError:
        return len(process.net_connections(kind="all"))
    count = 0
    for descriptor in descriptors:
        try:
            count += os.readlink(f"{_FD_DIRECTORY}/{descriptor}").startswith("socket:")
        except OSError:  # closed meanwhile
            continue
    return count


class TransferCounters:
    """Bytes of task data a worker fetched from peers and served to peers and clients, since
    it started (storied's own count, beside the host's network counters)."""

    __slots__ = (
        "incoming_bytes",
        "outgoing_bytes",
        "shared_incoming_bytes",
        "shared_outgoing_bytes",
    )

    def __init__(self) -> None:
        self.incoming_bytes = 0
        self.outgoing_bytes = 0
        #: of those, the bytes handed over as shared-memory segments rather than sent
        self.shared_incoming_bytes = 0
        self.shared_outgoing_bytes = 0


class ResourceSampler:
    """Samples one worker process: call ``sample()`` once per heartbeat."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call only starts the measurement
        self._net = psutil.net_io_counters()
        self._net_time = time.monotonic()
        self._failed = False

    def sample(self) -> dict[str, Any] | None:
        """Where the worker stands now (network rates since the previous sample), or None if
        the system would not say: a heartbeat goes out without a sample rather than not at
        all."""
        try:
            return self._sample()
        except (psutil.Error, OSError) as error:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "Worker %s cannot sample its resource use, heartbeats go without: %r",
                    self.worker.address,
                    error,
                )
            return None

    def _sample(self) -> dict[str, Any]:
        process = self._process
        data = self.worker.data
        spilling = isinstance(data, SpillBuffer)
        net, now = psutil.net_io_counters(), time.monotonic()
        read_bps = write_bps = None
        if net is not None and self._net is not None:  # None: the host has no interfaces
            elapsed = max(now - self._net_time, 1e-6)
            read_bps = max((net.bytes_recv - self._net.bytes_recv) / elapsed, 0.0)
            write_bps = max((net.bytes_sent - self._net.bytes_sent) / elapsed, 0.0)
        self._net, self._net_time = net, now
        usage = accounting.usage(process, self.worker.shared.held_bytes)
        return {
            "time": time.time(),
            "cpu": process.cpu_percent(),
            "memory": usage.rss,
            "managed_bytes": data.memory_bytes if spilling else None,
            "spilled_bytes": data.spilled_bytes if spilling else 0,
            "shm_bytes": usage.shm,
            "sockets": open_sockets(process),
            "num_fds": process.num_fds() if _HAS_FDS else None,
            "host_read_bps": read_bps,
            "host_write_bps": write_bps,
            "transfer_incoming_bytes_total": self.worker.transfers.incoming_bytes,
            "transfer_outgoing_bytes_total": self.worker.transfers.outgoing_bytes,
            "transfer_shm_incoming_bytes_total": self.worker.transfers.shared_incoming_bytes,
            "transfer_shm_outgoing_bytes_total": self.worker.transfers.shared_outgoing_bytes,
        }
