"""Parts a scheduler serves besides tasks (``Scheduler.add_extension``).

An extension adds client requests and hears when clients and workers leave; the scheduler
makes each of ``DEFAULT_EXTENSIONS`` when it starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

#: name -> ``module:class``, the class taking the scheduler
DEFAULT_EXTENSIONS = {
    "coordination": "storied.coordination.extension:CoordinationExtension",
    "manage": "storied.scheduler.manage:ClusterManager",
    "record-pages": "storied.scheduler.record_pages:RecordPages",
    "replicas": "storied.scheduler.replicas:ReplicasExtension",
    "telemetry": "storied.scheduler.telemetry:WorkerTelemetry",
    "stealing": "storied.scheduler.balancing:StealingExtension",
}


class SchedulerExtension(Protocol):
    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        """Request name -> handler, called with the requesting client's id first."""
        ...

    def remove_client(self, client: str) -> None: ...

    def remove_worker(self, address: str) -> None: ...


def default_extensions(scheduler: Scheduler) -> dict[str, SchedulerExtension]:
    made = {}
    for name, target in DEFAULT_EXTENSIONS.items():
        module, _, attribute = target.partition(":")
        made[name] = getattr(importlib.import_module(module), attribute)(scheduler)
    return made
