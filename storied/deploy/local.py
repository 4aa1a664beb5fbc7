"""A scheduler in this process and workers beside it: processes, or in-process for tests."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storied import config
from storied.comm import Security
from storied.compat import missing
from storied.deploy.adaptive import Adaptive
from storied.loop import LoopThread
from storied.nanny import lifeline
from storied.resources import parse_resources
from storied.scheduler.server import Scheduler
from storied.shm import nontemporal
from storied.worker.memory import parse_memory_limit
from storied.worker.server import Worker

if TYPE_CHECKING:
    from storied.client.client import Client

logger = logging.getLogger("storied.deploy")

#: set by LocalCluster for its worker processes: their console shows only this level and up
SILENCE_ENV_VAR = "STORIED_INTERNAL_SILENCE_LOGS"


class WorkerProcess:
    """A worker running in its own Python process (``storied worker``), under a nanny process
    unless ``nanny`` is false. It dies with this process (see ``storied.nanny.lifeline``)."""

    def __init__(
        self,
        name: str,
        scheduler_address: str,
        nthreads: int,
        host: str,
        security: Security,
        log_level: int | None,
        nanny: bool = True,
        resources: Mapping[str, float] | None = None,
        insecure: bool = False,
        memory_limit: int | None = None,
    ) -> None:
        self.name = name
        command = [
            sys.executable,
            "-m",
            "storied",
            "worker",
            scheduler_address,
            "--nthreads",
            str(nthreads),
            "--name",
            name,
            "--host",
            host,
            "--nanny" if nanny else "--no-nanny",
            "--memory-limit",
            str(memory_limit or 0),
        ]
        if insecure:
            command.append("--insecure")
        if resources:
            command += ["--resources", ",".join(f"{k}={v!r}" for k, v in resources.items())]
        env = nontemporal.worker_environ(
            lifeline.environ_with_parent(config.environ_for_subprocess())
        )
        if log_level is not None:
            env[SILENCE_ENV_VAR] = str(log_level)
        if security.token:
            env["STORIED_AUTH_TOKEN"] = security.token
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        """The pid of the process this cluster started: the nanny's, if there is one."""
        return self.process.pid

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name!r} pid={self.pid}>"

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                break
            await asyncio.sleep(0.02)


class LocalCluster:
    """A scheduler in this process plus ``n_workers`` workers, as in dask.distributed."""

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        host: str = "127.0.0.1",
        scheduler_port: int = 0,
        dashboard_address: str | int | None = ":8787",
        *,
        asynchronous: bool = False,
        security: Security | bool = True,
        ledger: str | os.PathLike[str] | None = None,
        silence_logs: int | bool = logging.WARNING,
        nanny: bool = True,
        resources: str | Mapping[str, float] | None = None,
        insecure: bool = False,
        memory_limit: str | float | None = "auto",
        **scheduler_kwargs: Any,
    ) -> None:
        """``resources``: what each worker lends its tasks, e.g. ``{"GPU": 1}`` (as Dask's);
        ``memory_limit``: each worker's (``"auto"``: system memory shared out by the workers).
        ``insecure=True`` allows listening beyond loopback with ``security=False``."""
        if n_workers is None:
            n_workers = 2 if processes else 1
        if threads_per_worker is None:
            threads_per_worker = max(1, (os.cpu_count() or 1) // max(n_workers, 1))
        for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
            if not isinstance(value, int) or value < 0:
                raise TypeError(f"{name} must be a non-negative int, not {value!r}")
        if security is True:
            security = Security.generate()
        elif security is False:
            security = Security()
        self.security: Security = security
        self.processes = processes
        #: worker processes run under nannies, which restart them when they die
        self.nanny = nanny
        self.host = host
        self.insecure = insecure
        self.threads_per_worker = threads_per_worker
        self.resources = None if resources is None else parse_resources(resources)
        #: each worker's memory limit in bytes, None for none
        self.memory_limit = parse_memory_limit(memory_limit, threads_per_worker, n_workers or 1)
        self.asynchronous = asynchronous
        config.configure_logging()
        self._worker_log_level = int(silence_logs) if silence_logs else None
        if silence_logs:
            config.silence_console(int(silence_logs))
        self.scheduler = Scheduler(
            host,
            scheduler_port,
            security=self.security,
            ledger=ledger,
            dashboard_address=dashboard_address,
            insecure=insecure,
            **scheduler_kwargs,
        )
        self.workers: dict[str, Worker | WorkerProcess] = {}
        self._adaptive: Adaptive | None = None
        self._n_workers = n_workers
        self._next_name = 0
        self.status = "created"
        self._loop_thread: LoopThread | None = None
        if asynchronous:
            self._started = asyncio.ensure_future(self._start())
        else:
            self._loop_thread = LoopThread.acquire()
            self.loop = self._loop_thread.loop
            try:
                self._loop_thread.run(self._start())
            except BaseException:
                self._loop_thread.run(self._close())
                self._loop_thread.release()
                self._loop_thread = None
                raise

    def __await__(self):  # type: ignore[no-untyped-def]
        async def started() -> LocalCluster:
            await self._started
            return self

        return started().__await__()

    async def _start(self) -> None:
        await self.scheduler.start()
        self.status = "running"
        await self._scale(self._n_workers)

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's status page, or None when it serves none (as Dask's)."""
        dashboard = self.scheduler.dashboard
        return dashboard.link if dashboard is not None else None

    def __repr__(self) -> str:
        return f"LocalCluster({self.scheduler.address!r}, workers={len(self.workers)})"

    def __getattr__(self, name: str) -> Any:
        """dask.distributed names storied does not support say so (``storied.compat``)."""
        raise missing("LocalCluster", name)

    def scale(self, n: int) -> Any:
        """Grow or shrink to ``n`` workers, waiting until they have joined or left; stops
        adaptive scaling, as in Dask."""
        self._stop_adaptive()
        if self.asynchronous:
            return self._scale(n)
        assert self._loop_thread is not None
        return self._loop_thread.run(self._scale(n))

    async def _scale(self, n: int) -> None:
        for name, worker in list(self.workers.items()):
            if isinstance(worker, WorkerProcess) and worker.process.poll() is not None:
                del self.workers[name]  # died (or was killed): a replacement is started below
        for name in self._retired_names() & set(self.workers):
            await self._stop_worker(self.workers.pop(name))  # retired: it is on its way out
        while len(self.workers) < n:
            name = str(self._next_name)
            self._next_name += 1
            if self.processes:
                self.workers[name] = WorkerProcess(
                    name,
                    self.scheduler.address,
                    self.threads_per_worker,
                    self.host,
                    self.security,
                    self._worker_log_level,
                    self.nanny,
                    self.resources,
                    self.insecure,
                    self.memory_limit,
                )
            else:
                self.workers[name] = await Worker(
                    self.scheduler.address,
                    nthreads=self.threads_per_worker,
                    name=name,
                    host=self.host,
                    security=self.security,
                    resources=self.resources,
                    insecure=self.insecure,
                    memory_limit=self.memory_limit,
                ).start()
        surplus = list(self.workers)[n:]
        for name in surplus:
            await self._stop_worker(self.workers.pop(name))
        await self._wait_for_workers()

    async def _wait_for_workers(self, timeout: float = 60.0) -> None:
        """Until every worker of ours has joined (others may join the scheduler too)."""
        deadline = time.monotonic() + timeout
        while True:
            joined = {link.name for link in self.scheduler.workers.values()}
            missing = [name for name in self.workers if name not in joined]
            if not missing:
                return
            for name in missing:
                worker = self.workers[name]
                if isinstance(worker, WorkerProcess) and worker.process.poll() is not None:
                    raise RuntimeError(
                        f"worker process {name} exited with code {worker.process.returncode} "
                        "before joining the scheduler"
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {missing} did not join within {timeout}s")
            await asyncio.sleep(0.01)

    def get_client(self) -> Client:
        """The current client if it is this cluster's, else a new ``Client(self)``, as Dask's."""
        from storied.client.client import Client

        try:
            current = Client.current()
        except ValueError:
            current = None
        if current is not None and current.cluster is self:
            return current
        return Client(self)

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> Any:
        """Until at least ``n_workers`` workers have joined the scheduler (any worker, not only
        this cluster's), as Dask's; ``TimeoutError`` after ``timeout`` seconds."""
        if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive int, not {n_workers!r}")
        joined = self._until_joined(n_workers, config.parse_timedelta(timeout))
        if self.asynchronous:
            return joined
        assert self._loop_thread is not None
        return self._loop_thread.run(joined)

    async def _until_joined(self, n_workers: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.scheduler.workers) < n_workers:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.scheduler.workers)} of {n_workers} workers joined "
                    f"within {timeout}s"
                )
            await asyncio.sleep(0.01)

    def adapt(
        self,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: float | str = "1s",
        wait_count: int = 3,
        **kwargs: Any,
    ) -> Adaptive:
        """Scale between ``minimum`` and ``maximum`` workers with the load, as Dask's
        ``cluster.adapt``: up when tasks wait for threads, down (retiring, so no data is
        lost) when workers stay idle ``wait_count`` looks ``interval`` apart. Replaces an
        earlier ``adapt``; ``cluster.scale`` stops it. Dask's other options are accepted."""
        adaptive = Adaptive(self, minimum, maximum, interval, wait_count)
        if kwargs:
            logger.info("adapt ignores Dask's options %s", sorted(kwargs))
        self._stop_adaptive()
        self._adaptive = adaptive
        if self.asynchronous:
            adaptive.start()
        else:
            assert self._loop_thread is not None
            self._loop_thread.run(_started(adaptive))
        return adaptive

    def _stop_adaptive(self) -> None:
        if self._adaptive is not None:
            self._adaptive.stop()
            self._adaptive = None

    def scale_up(self, n: int) -> Any:
        """Grow to ``n`` workers (as Dask's; fewer than there are: nothing happens)."""
        return self.scale(max(n, len(self.workers)))

    def scale_down(self, workers: Any) -> Any:
        """Retire ``workers`` (addresses or names): their data moves to the others first."""
        names = [workers] if isinstance(workers, str) else list(workers)
        if self.asynchronous:
            return self._retire(names, requester="scale_down")
        assert self._loop_thread is not None
        return self._loop_thread.run(self._retire(names, requester="scale_down"))

    async def _retire(self, workers: list[str], requester: str) -> None:
        """Retire through the scheduler (data moves first), then forget those workers."""
        manager = self.scheduler.extensions["manage"]
        retired = await manager.retire_workers(requester, workers)  # type: ignore[attr-defined]
        await self._scale(len(self.workers) - len(retired))

    def _retired_names(self) -> set[str]:
        manager = self.scheduler.extensions.get("manage")
        return set(getattr(manager, "retired_names", ()))

    async def _replace_workers(self, names: list[str]) -> None:
        """Start fresh workers in place of ``names`` (closed by a restart: no nanny)."""
        for name in names:
            worker = self.workers.pop(name, None)
            if worker is not None:
                await self._stop_worker(worker)
        await self._scale(len(self.workers) + len(names))

    async def _stop_worker(self, worker: Worker | WorkerProcess) -> None:
        if isinstance(worker, WorkerProcess):
            worker.terminate()
            await worker.wait_closed()
        else:
            await worker.close()

    def close(self) -> Any:
        if self.asynchronous:
            return self._close()
        if self._loop_thread is None:
            return None
        try:
            self._loop_thread.run(self._close())
        finally:
            self._loop_thread.release()
            self._loop_thread = None
        return None

    async def _close(self) -> None:
        if self.status == "closed":
            return
        self.status = "closing"
        self._stop_adaptive()
        workers = list(self.workers.values())
        self.workers.clear()
        await asyncio.gather(*(self._stop_worker(w) for w in workers), return_exceptions=True)
        await self.scheduler.close()
        self.status = "closed"

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> LocalCluster:
        await self
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()


async def _started(adaptive: Adaptive) -> None:
    adaptive.start()
