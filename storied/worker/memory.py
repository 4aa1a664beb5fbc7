"""A worker's memory budget: its limit, the spill buffer for results, and the monitor.

As in Dask, a worker with a ``memory_limit`` keeps its results in ``Worker.data``, a
``SpillBuffer``: once their sizes pass ``worker.memory.target`` of the limit, the least recently
used go to disk (pickled, in the worker's local directory) and come back when read. A monitor
looks at the process's memory every ``worker.memory.monitor-interval`` (its RSS plus the
shared-memory segments it holds that RSS does not show, ``storied.shm.accounting``): past
``spill`` it spills
until the estimate falls below ``target``, past ``pause`` the worker starts no new tasks until
it falls again. The nanny kills and restarts a worker past ``terminate``
(``storied.nanny.memory``). Spills are reported in batches, pauses one by one, under the
``memory`` topic (pauses under ``all`` too) and in the ``storied.worker`` log.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import psutil
import zict

from storied import config
from storied.protocol.serialize import pickle_dumps, pickle_loads
from storied.shm import accounting

if TYPE_CHECKING:
    from storied.worker.server import Worker

logger = logging.getLogger("storied.worker")

#: the topics of spill reports, and of pauses, unpauses and memory restarts
SPILL_TOPICS = ["memory"]
ALERT_TOPICS = ["all", "memory"]
#: spills are summed over at least this many seconds per event
SPILL_REPORT_INTERVAL = 1.0
#: how many items of a container ``sizeof`` looks at to estimate the rest
_SIZEOF_SAMPLE = 16
#: what ``sizeof`` says of a value it cannot weigh
_DEFAULT_SIZE = 64


def system_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's if smaller."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as file:
                text = file.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def parse_memory_limit(
    value: str | float | None, nthreads: int = 1, n_workers: int | None = None
) -> int | None:
    """Bytes from a ``memory_limit`` as Dask takes it: ``None``/``0`` (no limit), ``"auto"``
    (system memory shared out by ``n_workers``, else by thread share of the CPUs), a fraction
    of system memory (``0.5``), bytes, or a size (``"4GB"``); never more than the system has."""
    if value is None or value == 0 or value == "0":
        return None
    total = system_memory()
    if value == "auto":
        share = 1 / n_workers if n_workers else min(1.0, nthreads / (os.cpu_count() or 1))
        return int(total * share)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError(
            f"memory_limit must be a size such as '4GB', a fraction of system memory such as "
            f"0.5, 'auto' or None, not {value!r} ({type(value).__name__})"
        )
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None and 0 < number <= 1:
        return int(total * number)
    try:
        limit = config.parse_bytes(value)
    except ValueError as exc:
        raise ValueError(
            f"memory_limit {value!r} is not a size (e.g. '4GB', '512MiB'), a fraction of "
            f"system memory (e.g. 0.5), 'auto' or 0/None: {exc}"
        ) from None
    return min(limit, total) if limit else None


def memory_fractions() -> dict[str, float | None]:
    """``target``, ``spill``, ``pause``, ``terminate`` from config ``worker.memory`` (each a
    fraction of the limit, or None/false: off), checked."""
    settings = config.get("worker.memory")
    fractions: dict[str, float | None] = {}
    for name in ("target", "spill", "pause", "terminate"):
        value = settings[name]
        if value is None or value is False:
            fractions[name] = None
        elif isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            fractions[name] = float(value)
        else:
            raise ValueError(
                f"config worker.memory.{name} must be a fraction of the memory limit in (0, 1] "
                f"or null, not {value!r}"
            )
    return fractions


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def sizeof(value: Any) -> int:
    """An estimate of the bytes ``value`` holds: arrays and series by ``nbytes``, frames by
    their memory usage, containers from a sample of their items. Attributes are looked up on
    the type, so proxies (actors) are not asked; whatever goes wrong, the answer is a number."""
    try:
        return _sizeof(value)
    except Exception:
        return _DEFAULT_SIZE


def _sizeof(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, list | tuple | set | frozenset | dict):
        if not value:
            return sys.getsizeof(value)
        # only the sample is taken: every result is sized, and a copy of all items is not cheap
        items = value.items() if isinstance(value, dict) else value
        sample = list(itertools.islice(items, _SIZEOF_SAMPLE))
        sampled = sum(sizeof(item) for item in sample)
        return sys.getsizeof(value) + sampled * len(value) // len(sample)
    kind = type(value)
    if hasattr(kind, "memory_usage") and hasattr(kind, "columns"):
        return int(value.memory_usage(deep=True).sum())
    if hasattr(kind, "nbytes"):
        size = value.nbytes
        if isinstance(size, int):
            return size
    return sys.getsizeof(value)


class SpillBuffer(zict.Buffer):
    """``Worker.data`` with a memory limit: values in memory up to ``target`` bytes (by
    ``sizeof``), the least recently used beyond that pickled to files in ``directory``.
    Reading a spilled key brings it back into memory. Counts what it moves either way, for the
    monitor's reports."""

    def __init__(self, directory: str, target: float) -> None:
        self.directory = directory
        #: key -> size of what is on disk now
        self.spilled_sizes: dict[str, int] = {}
        #: spilled and unspilled since the last ``take_counts``: [keys, bytes] each
        self._moved = {"spilled": [0, 0], "unspilled": [0, 0]}
        super().__init__(
            fast={},
            slow=zict.Func(pickle_dumps, pickle_loads, zict.File(directory)),
            n=target,
            weight=lambda key, value: sizeof(value),
            fast_to_slow_callbacks=self._spilled,
            slow_to_fast_callbacks=self._unspilled,
        )

    @property
    def memory_bytes(self) -> int:
        """Bytes of results held in memory (Dask's "managed" memory)."""
        return int(self.fast.total_weight)

    @property
    def spilled_bytes(self) -> int:
        return sum(self.spilled_sizes.values())

    def _spilled(self, key: str, value: Any) -> None:
        size = sizeof(value)
        self.spilled_sizes[key] = size
        self._moved["spilled"][0] += 1
        self._moved["spilled"][1] += size

    def _unspilled(self, key: str, value: Any) -> None:
        size = self.spilled_sizes.pop(key, 0)
        self._moved["unspilled"][0] += 1
        self._moved["unspilled"][1] += size

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.spilled_sizes.pop(key, None)

    def evict_bytes(self, amount: float) -> int:
        """Spill least recently used values until ``amount`` bytes went to disk (or none are
        left in memory); the bytes spilled."""
        freed = 0
        while freed < amount and self.fast:
            _, _, weight = self.fast.evict()
            freed += int(weight)
        return freed

    def take_counts(self) -> dict[str, list[int]]:
        """What moved since the last call: ``{"spilled": [keys, bytes], "unspilled": [...]}``."""
        moved, self._moved = self._moved, {"spilled": [0, 0], "unspilled": [0, 0]}
        return moved


class MemoryManager:
    """One worker's memory budget: its data mapping, and the monitor that spills and pauses."""

    def __init__(
        self,
        worker: Worker,
        memory_limit: str | float | None,
        local_directory: str | None = None,
    ) -> None:
        self.worker = worker
        self.limit = parse_memory_limit(memory_limit, worker.nthreads)
        self.fractions = memory_fractions() if self.limit else {}
        self.monitor_interval = (
            config.parse_timedelta(config.get("worker.memory.monitor-interval")) or 0.1
        )
        self.local_directory = tempfile.mkdtemp(
            prefix="worker-", dir=_scratch_space(local_directory)
        )
        target = self.fractions.get("target")
        self.data: dict[str, Any] | SpillBuffer
        if self.limit and target:
            self.data = SpillBuffer(
                os.path.join(self.local_directory, "storage"), target * self.limit
            )
        else:
            self.data = {}
        self.paused = False
        self._process = psutil.Process()
        self._reported_at = time.monotonic()
        self._warned_unmanaged_at = 0.0

    def on_spill(self, callback: Callable[[str, Any], None]) -> None:
        """Call ``callback(key, value)`` whenever a result goes to disk."""
        if isinstance(self.data, SpillBuffer):
            self.data.fast_to_slow_callbacks.append(callback)

    @property
    def in_memory(self) -> MutableMapping[str, Any]:
        """The results held in memory now (not spilled): reading one never loads from disk."""
        return self.data.fast if isinstance(self.data, SpillBuffer) else self.data

    @property
    def monitored(self) -> bool:
        """Whether there is anything to watch: spilling to report, or RSS to act on."""
        return bool(self.limit and any(self.fractions[n] for n in ("target", "spill", "pause")))

    def usage(self) -> accounting.Usage:
        """The process's memory: RSS, and the bytes of its shared-memory segments RSS hides."""
        return accounting.usage(self._process, self.worker.shared.held_bytes)

    async def monitor(self, running: Callable[[], bool]) -> None:
        """Check memory every ``monitor_interval`` while ``running()``."""
        while running():
            await asyncio.sleep(self.monitor_interval)
            self.check()

    def check(self) -> None:
        """Spill past ``spill``, pause past ``pause``, unpause below it; report spills. Past
        either, the pooled shared-memory segments are given up first."""
        assert self.limit is not None
        usage = self.usage()
        memory = usage.total
        spill, target = self.fractions["spill"], self.fractions["target"]
        pause = self.fractions["pause"]
        pressure = min((f for f in (spill, pause) if f), default=None)
        if pressure and memory > pressure * self.limit and self.worker.shared.pool.drain():
            usage = self.usage()  # pooled segments go before any result is spilled
            memory = usage.total
        if spill and memory > spill * self.limit and isinstance(self.data, SpillBuffer):
            goal = (target or spill) * self.limit
            freed = self.data.evict_bytes(memory - goal)
            if freed < memory - goal:
                self._warn_unmanaged(memory)
        if pause:
            if not self.paused and memory > pause * self.limit:
                self._set_paused(True, usage)
            elif self.paused and memory <= pause * self.limit:
                self._set_paused(False, usage)
        if time.monotonic() - self._reported_at >= SPILL_REPORT_INTERVAL:
            self.report_spills(usage)

    def report_spills(self, usage: accounting.Usage | None = None) -> None:
        """One ``spill`` event for what moved to and from disk since the last report."""
        self._reported_at = time.monotonic()
        if not isinstance(self.data, SpillBuffer):
            return
        moved = self.data.take_counts()
        if not moved["spilled"][0] and not moved["unspilled"][0]:
            return
        logger.info(
            "Worker %s spilled %d keys (%s) to disk and read %d back (%s)",
            self.worker.address,
            moved["spilled"][0],
            format_bytes(moved["spilled"][1]),
            moved["unspilled"][0],
            format_bytes(moved["unspilled"][1]),
        )
        self.worker.log_event(
            SPILL_TOPICS,
            {
                "action": "spill",
                **self.metrics(usage or self.usage()),
                "spilled-keys": moved["spilled"][0],
                "spilled-bytes-moved": moved["spilled"][1],
                "unspilled-keys": moved["unspilled"][0],
                "unspilled-bytes-moved": moved["unspilled"][1],
            },
        )

    def metrics(self, usage: accounting.Usage) -> dict[str, Any]:
        """Where the worker stands: process memory (RSS, and shared memory it does not show),
        managed (results in memory), spilled."""
        data = self.data
        spilling = isinstance(data, SpillBuffer)
        return {
            "worker": self.worker.address,
            "name": self.worker.name,
            "rss": usage.rss,
            "shm": usage.shm,
            "memory-limit": self.limit,
            "managed": data.memory_bytes if spilling else None,
            "spilled": data.spilled_bytes if spilling else 0,
            "spilled-count": len(data.spilled_sizes) if spilling else 0,
        }

    def _set_paused(self, paused: bool, usage: accounting.Usage) -> None:
        assert self.limit is not None
        self.paused = paused
        pause = self.fractions["pause"] or 0
        logger.warning(
            "Worker %s %s: process memory %s (shared memory %s of it) is %.0f%% of its limit %s "
            "(pause at %.0f%%)",
            self.worker.address,
            "pauses, starting no new tasks" if paused else "resumes",
            format_bytes(usage.total),
            format_bytes(usage.shm),
            100 * usage.total / self.limit,
            format_bytes(self.limit),
            100 * pause,
        )
        self.worker.log_event(
            ALERT_TOPICS, {"action": "pause" if paused else "unpause", **self.metrics(usage)}
        )
        self.worker._memory_paused(paused)

    def _warn_unmanaged(self, memory: int) -> None:
        """Memory is past ``spill`` with nothing (left) to spill: say so, once in a while."""
        now = time.monotonic()
        if now - self._warned_unmanaged_at < 5.0:
            return
        self._warned_unmanaged_at = now
        assert self.limit is not None
        logger.warning(
            "Worker %s uses %s of memory (limit %s) that is not results it could spill: a "
            "task may hold large objects, leak, or the allocator has not given memory back",
            self.worker.address,
            format_bytes(memory),
            format_bytes(self.limit),
        )

    def close(self) -> None:
        """Drop the spill files and the local directory."""
        self.data.clear()
        shutil.rmtree(self.local_directory, ignore_errors=True)


def _scratch_space(local_directory: str | None) -> str:
    """The folder in which workers make their local directories."""
    base = local_directory or config.get("worker.local-directory") or tempfile.gettempdir()
    path = os.path.join(base, "storied-scratch-space")
    os.makedirs(path, exist_ok=True)
    return path
