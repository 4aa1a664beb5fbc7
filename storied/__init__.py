"""storied: a distributed task scheduler that keeps everything on the record.

Speaks the dask.distributed futures API: change one import.
"""

from storied.client.client import Client, as_completed, wait
from storied.client.future import Future
from storied.comm import Security
from storied.coordination import Actor, ActorFuture, Event, Lock, Queue, Semaphore, Variable
from storied.deploy.local import LocalCluster
from storied.exceptions import CancelledError, KilledWorker
from storied.plugin import SchedulerPlugin, WorkerPlugin
from storied.scheduler.server import Scheduler
from storied.worker.server import Worker, get_worker

__all__ = [
    "Actor",
    "ActorFuture",
    "CancelledError",
    "Client",
    "Event",
    "Future",
    "KilledWorker",
    "LocalCluster",
    "Lock",
    "Queue",
    "Scheduler",
    "SchedulerPlugin",
    "Security",
    "Semaphore",
    "Variable",
    "Worker",
    "WorkerPlugin",
    "as_completed",
    "get_worker",
    "wait",
]
