"""The nanny's memory watch: a worker whose process passes ``worker.memory.terminate`` of its
memory limit (RSS plus the shared-memory segments it made that RSS does not show,
``storied.shm.accounting``) is killed (SIGKILL: it may be too swamped to close) and restarted,
as in Dask.

The watch says why before the kill, so the ``remove-worker`` event, the nanny's
``worker-restart`` event and a ``memory-restart`` event under ``all`` and ``memory`` carry the
cause, with a WARNING in the ``storied.nanny`` log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psutil

from storied import config
from storied.shm import accounting
from storied.worker.memory import format_bytes, memory_fractions

logger = logging.getLogger("storied.nanny")

#: the topics of the event a memory restart logs
MEMORY_RESTART_TOPICS = ["all", "memory"]


class MemoryWatch:
    """Kills the worker process whose memory passes ``terminate`` of ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.terminate = memory_fractions()["terminate"]
        self.interval = config.parse_timedelta(config.get("worker.memory.monitor-interval")) or 0.1

    @property
    def active(self) -> bool:
        return bool(self.limit and self.terminate)

    async def run(
        self,
        process: Callable[[], asyncio.subprocess.Process | None],
        on_kill: Callable[[int, dict[str, Any]], None],
    ) -> None:
        """Watch ``process()`` (the current worker process) forever; before killing one, hand
        its pid and the cause (``reason``, ``signal``, ``exit-code``, ``rss``, ``shm``) to
        ``on_kill``."""
        while True:
            await asyncio.sleep(self.interval)
            current = process()
            if current is None or current.returncode is not None:
                continue
            try:
                usage = accounting.usage_of(psutil.Process(current.pid))
            except psutil.Error:
                continue  # it just died: the nanny's watch of its exit takes over
            assert self.terminate is not None
            if usage.total <= self.terminate * self.limit:
                continue
            in_shm = f" ({format_bytes(usage.shm)} in shared memory)" if usage.shm else ""
            reason = (
                f"worker process {current.pid} used {format_bytes(usage.total)}{in_shm}, more than "
                f"{100 * self.terminate:.0f}% of its memory limit {format_bytes(self.limit)}: "
                "killed by its nanny (SIGKILL)"
            )
            logger.warning("%s; restarting it", reason)
            on_kill(
                current.pid,
                {
                    "reason": reason,
                    "exit-code": None,
                    "signal": "SIGKILL",
                    "rss": usage.rss,
                    "shm": usage.shm,
                },
            )
            current.kill()
            await current.wait()
