"""Coordination between clients and tasks: Variable, Queue, Lock, MultiLock, Semaphore, Event,
published datasets and actors, as in dask.distributed, each operation on the record."""

from storied.coordination.actor import Actor, ActorFuture
from storied.coordination.event import Event
from storied.coordination.multilock import MultiLock
from storied.coordination.queue import Queue
from storied.coordination.semaphore import Lock, Semaphore
from storied.coordination.variable import Variable

__all__ = [
    "Actor",
    "ActorFuture",
    "Event",
    "Lock",
    "MultiLock",
    "Queue",
    "Semaphore",
    "Variable",
]
