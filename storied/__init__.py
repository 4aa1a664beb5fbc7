"""storied: a distributed task scheduler that keeps everything on the record.

Speaks the dask.distributed futures API: change one import.
"""

from storied.client.as_completed import as_completed
from storied.client.client import Client, wait
from storied.client.current import default_client
from storied.client.future import Future
from storied.client.futures_of import fire_and_forget, futures_of
from storied.client.worker_client import get_client, worker_client
from storied.comm import Security
from storied.compat import missing
from storied.coordination import (
    Actor,
    ActorFuture,
    Event,
    Lock,
    MultiLock,
    Queue,
    Semaphore,
    Variable,
)
from storied.deploy.local import LocalCluster
from storied.diagnostics import get_task_stream, performance_report, progress
from storied.exceptions import CancelledError, KilledWorker
from storied.plugin import SchedulerPlugin, WorkerPlugin
from storied.scheduler.server import Scheduler
from storied.worker.secede import rejoin, secede
from storied.worker.server import Worker, get_worker
from storied.worker_plugins import Environ, UploadFile

#: as in dask.distributed (the built-in one on Python 3.11+), and Dask's old name of worker_client
TimeoutError = TimeoutError
local_client = worker_client

__all__ = [
    "Actor",
    "ActorFuture",
    "CancelledError",
    "Client",
    "Environ",
    "Event",
    "Future",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "MultiLock",
    "Queue",
    "Scheduler",
    "SchedulerPlugin",
    "Security",
    "Semaphore",
    "TimeoutError",
    "UploadFile",
    "Variable",
    "Worker",
    "WorkerPlugin",
    "as_completed",
    "default_client",
    "fire_and_forget",
    "futures_of",
    "get_client",
    "get_task_stream",
    "get_worker",
    "local_client",
    "performance_report",
    "progress",
    "rejoin",
    "secede",
    "wait",
    "worker_client",
]


def __getattr__(name: str) -> object:
    """dask.distributed names storied does not support say so (``storied.compat``)."""
    raise missing("storied", name)
