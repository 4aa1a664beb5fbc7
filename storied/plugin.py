"""Plugins: user code that sees every transition and event on the scheduler or the workers.

A hook that raises is logged with the plugin's name and never breaks a transition.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler
    from storied.worker.server import Worker

logger = logging.getLogger("storied.plugin")


class SchedulerPlugin:
    """Subclass and override the hooks you need; register with ``client.register_plugin``."""

    name: str | None = None
    idempotent: bool = False

    def start(self, scheduler: Scheduler) -> Any: ...
    def close(self) -> Any: ...
    def update_graph(
        self,
        scheduler: Scheduler,
        *,
        client: str,
        keys: set[str],
        tasks: list[str],
        **kwargs: Any,
    ) -> None: ...
    def transition(
        self, key: str, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None: ...
    def add_worker(self, scheduler: Scheduler, worker: str) -> Any: ...
    def remove_worker(
        self, scheduler: Scheduler, worker: str, *, stimulus_id: str, **kwargs: Any
    ) -> Any: ...
    def add_client(self, scheduler: Scheduler, client: str) -> Any: ...
    def remove_client(self, scheduler: Scheduler, client: str) -> Any: ...
    def log_event(self, topic: str, msg: Any) -> None: ...


class WorkerPlugin:
    """Subclass and override the hooks you need; workers joining later get it too."""

    name: str | None = None
    idempotent: bool = False

    def setup(self, worker: Worker) -> Any: ...
    def teardown(self, worker: Worker) -> Any: ...
    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None: ...


def plugin_name(plugin: SchedulerPlugin | WorkerPlugin, name: str | None = None) -> str:
    return name or getattr(plugin, "name", None) or type(plugin).__name__


async def run_plugin_hook(name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call a sync or async hook; log, never raise, if it fails."""
    try:
        result = hook(*args, **kwargs)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("Plugin %r failed in %s", name, getattr(hook, "__name__", hook))
