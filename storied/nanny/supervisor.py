"""The nanny: runs a worker in a child process and starts it again whenever it dies.

A worker can die of anything a task does (``os._exit``, a segfault, the kernel's OOM killer);
the scheduler then reschedules its tasks, and the nanny brings the worker back, same name, new
process, so the cluster keeps its size. It tells the scheduler why the worker died (exit code
or signal), which goes into the ``remove-worker`` event, and logs a ``worker-restart`` event of
its own. A worker that keeps dying before it joins the scheduler is restarted with growing
delays. A worker that exits cleanly (code 0: asked to close, or gave up on a lost scheduler)
takes the nanny with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from typing import Any

from storied import config
from storied.comm import Security, connect
from storied.comm.stream import Stream
from storied.nanny import lifeline
from storied.nanny.memory import MEMORY_RESTART_TOPICS, MemoryWatch
from storied.record import pack_event
from storied.shm import nontemporal, segments

logger = logging.getLogger("storied.nanny")

#: topics of the nanny's own events
EVENT_TOPICS = ["all", "nanny"]


class WorkerStartError(RuntimeError):
    """The first worker process exited before it joined the scheduler."""


def describe_exit(pid: int, returncode: int) -> dict[str, Any]:
    """Why a worker process ended, as the ``remove-worker`` and ``worker-restart`` events put
    it: ``reason`` in words, and ``exit-code`` or ``signal`` (a name such as ``"SIGKILL"``)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return {
            "reason": f"worker process {pid} was killed by {name}",
            "exit-code": None,
            "signal": name,
        }
    return {
        "reason": f"worker process {pid} exited with code {returncode}",
        "exit-code": returncode,
        "signal": None,
    }


class Nanny:
    """Supervises one worker process started with ``worker_command`` (``storied worker
    ... --no-nanny``); registers with the scheduler so the scheduler can tell which worker is
    whose and learn why one died."""

    def __init__(
        self,
        scheduler_address: str,
        worker_command: list[str],
        *,
        name: str | None = None,
        security: Security | None = None,
        env: dict[str, str] | None = None,
        memory_limit: int | None = None,
    ) -> None:
        """``memory_limit``: the worker's, in bytes; past ``worker.memory.terminate`` of it the
        nanny kills and restarts the worker."""
        self.scheduler_address = scheduler_address
        self.worker_command = worker_command
        self.name = name
        self.security = security or Security()
        self.env = nontemporal.worker_environ(dict(os.environ if env is None else env))
        self.id = f"Nanny-{uuid.uuid4()}"
        nanny_config = config.get("nanny")
        self.restart_backoff = config.parse_timedelta(nanny_config["restart-backoff"]) or 0.0
        self.restart_backoff_max = config.parse_timedelta(nanny_config["restart-backoff-max"])
        self.close_timeout = config.parse_timedelta(nanny_config["close-timeout"]) or 0.0
        self.connect_timeout = config.parse_timedelta(config.get("comm.connect-timeout")) or 10.0
        self.status = "created"
        self.process: asyncio.subprocess.Process | None = None
        #: where the current worker listens, once it has joined the scheduler
        self.worker_address: str | None = None
        self.restarts = 0
        self._stream: Stream | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        #: the scheduler asked for a fresh worker (``client.restart``): the current one's end,
        #: whatever its exit code, is followed by a new one
        self._restart_requested = False
        self.memory_watch = MemoryWatch(memory_limit or 0)
        #: worker pid -> why the nanny killed it (it reports that rather than the bare signal)
        self._kill_causes: dict[int, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"<Nanny {self.name!r} worker={self.worker_address} {self.status}>"

    @property
    def worker_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Nanny:
        self.status = "starting"
        self._stream = await self._register()
        self._spawn(self._keep_registered())
        await self._start_worker()
        assert self.process is not None
        if self.worker_address is None:
            returncode = await self.process.wait()
            await self.close()
            raise WorkerStartError(
                f"{describe_exit(self.process.pid, returncode)['reason']} before joining the "
                f"scheduler at {self.scheduler_address}"
            )
        self.status = "running"
        self._spawn(self._watch())
        if self.memory_watch.active:
            self._spawn(self.memory_watch.run(lambda: self.process, self._killed_for_memory))
        logger.info(
            "Nanny %s (%d) runs worker %s (pid %d)",
            self.name or self.id,
            os.getpid(),
            self.worker_address,
            self.process.pid,
        )
        return self

    async def close(self, reason: str = "nanny-close") -> None:
        """Close the worker (SIGTERM: it closes cleanly), kill it if it takes too long."""
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        logger.info("Nanny %s closing: %s", self.name or self.id, reason)
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.close_timeout)
            except TimeoutError:
                logger.warning("Worker pid %d did not close in time: killing it", process.pid)
                process.kill()
                await process.wait()
        if process is not None:
            self._remove_segments(process.pid)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()
        self.status = "closed"
        self._closed.set()

    async def finished(self) -> None:
        """Wait until the nanny has closed (for the CLI)."""
        await self._closed.wait()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ the worker

    async def _start_worker(self) -> None:
        """Start a worker process and wait until it has joined the scheduler, or died."""
        read_fd, write_fd = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.worker_command,
                env=lifeline.nanny_environ(
                    lifeline.environ_with_parent(self.env), self.id, write_fd
                ),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)
        self.worker_address = None
        report = await asyncio.to_thread(_read_report, read_fd)
        if report is not None:
            self.worker_address = report["address"]

    async def _watch(self) -> None:
        """Restart the worker whenever it dies, with growing delays while it dies young."""
        early_deaths = 0
        while True:
            assert self.process is not None
            process, address = self.process, self.worker_address
            returncode = await process.wait()
            self._remove_segments(process.pid)
            if self.status != "running":
                return
            if self._restart_requested:
                self._restart_requested = False
                await self._start_next_worker(process, address, reason="restart requested")
                continue
            if returncode == 0:
                self._spawn(self.close(reason="worker closed"))
                return
            why = self._kill_causes.pop(process.pid, None) or describe_exit(process.pid, returncode)
            early_deaths = 0 if address is not None else early_deaths + 1
            delay = self._restart_delay(early_deaths)
            logger.warning(
                "Worker %s: %s; restarting it%s",
                address or self.name or "(not yet joined)",
                why["reason"],
                f" in {delay:.1f}s" if delay else "",
            )
            self._send({"op": "worker-exit", "pid": process.pid, **why})
            await asyncio.sleep(delay)
            if self.status != "running":
                return
            await self._start_next_worker(process, address, **why, delay=delay)

    def _remove_segments(self, pid: int) -> None:
        """Unlink the shared-memory segments the dead worker ``pid`` left (``storied.shm``)."""
        removed = segments.remove_segments_of(pid)
        if removed:
            logger.info("Removed %d shared-memory segments of worker pid %d", removed, pid)

    def _request_restart(self, reason: str = "restart") -> None:
        """The scheduler asks for a fresh worker: stop this one (SIGTERM: it closes cleanly
        and unregisters); ``_watch`` starts the next."""
        process = self.process
        if self.status != "running" or process is None or process.returncode is not None:
            return
        logger.info(
            "Nanny %s restarting worker %s: %s", self.name or self.id, self.worker_address, reason
        )
        self._restart_requested = True
        process.send_signal(signal.SIGTERM)
        self._spawn(self._kill_if_slow(process))

    async def _kill_if_slow(self, process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(process.wait(), self.close_timeout)
        except TimeoutError:
            logger.warning("Worker pid %d did not close in time: killing it", process.pid)
            process.kill()

    async def _start_next_worker(
        self, process: asyncio.subprocess.Process, address: str | None, **why: Any
    ) -> None:
        """Start the worker after ``process`` (at ``address``); a ``worker-restart`` event
        says ``why``."""
        await self._start_worker()
        self.restarts += 1
        self._log_event(
            {
                "action": "worker-restart",
                "nanny": self.id,
                "name": self.name,
                "previous-worker": address,
                "previous-pid": process.pid,
                **why,
                "worker": self.worker_address,
                "pid": self.worker_pid,
                "restarts": self.restarts,
            }
        )

    def _killed_for_memory(self, pid: int, cause: dict[str, Any]) -> None:
        self._kill_causes[pid] = cause
        self._log_event(
            {
                "action": "memory-restart",
                "nanny": self.id,
                "name": self.name,
                "worker": self.worker_address,
                "pid": pid,
                "memory-limit": self.memory_watch.limit,
                **cause,
            },
            MEMORY_RESTART_TOPICS,
        )

    def _restart_delay(self, early_deaths: int) -> float:
        """No wait after a worker that had joined; doubling waits while workers die young."""
        if early_deaths == 0:
            return 0.0
        delay = self.restart_backoff * 2 ** (early_deaths - 1)
        return min(delay, self.restart_backoff_max) if self.restart_backoff_max else delay

    # ------------------------------------------------------------------ the scheduler

    async def _register(self) -> Stream:
        comm = await connect(self.scheduler_address, self.security, self.connect_timeout)
        comm.name = "nanny->scheduler"
        await comm.send({"op": "register-nanny", "id": self.id, "pid": os.getpid()})
        reply = await comm.read(self.connect_timeout)
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            await comm.close()
            raise ConnectionError(f"scheduler refused the nanny: {reply!r}")
        handlers = {"heartbeat": lambda: None, "restart-worker": self._request_restart}
        return Stream(comm, handlers, "nanny stream")

    async def _keep_registered(self) -> None:
        """Stay connected to the scheduler while the nanny runs, to be able to report."""
        while True:
            assert self._stream is not None
            await self._stream.run()
            while self.status in ("starting", "running"):
                try:
                    self._stream = await self._register()
                    break
                except (OSError, TimeoutError, ConnectionError) as exc:
                    logger.debug("Nanny could not reach %s: %s", self.scheduler_address, exc)
                    await asyncio.sleep(1.0)
            else:
                return

    def _log_event(self, msg: dict[str, Any], topics: list[str] = EVENT_TOPICS) -> None:
        """Into the scheduler's ledger, under ``topics``."""
        self._send({"op": "log-events", "events": [list(pack_event(topics, msg))]})

    def _send(self, msg: dict[str, Any]) -> None:
        if self._stream is None or self._stream.closed:
            logger.info("Not connected to the scheduler: dropped %s", msg["op"])
            return
        self._stream.send(msg)


def _read_report(read_fd: int) -> dict[str, Any] | None:
    """The worker's line saying it joined (blocks), or None when it died first."""
    with os.fdopen(read_fd, "rb") as pipe:
        line = pipe.readline()
    return json.loads(line) if line else None
