"""Plugins: user code that sees every transition and event on the scheduler or the workers.

A hook that raises is logged with the plugin's name, on the logger of the scheduler or worker
that runs it (so it shows in ``get_scheduler_logs``/``get_worker_logs``), and never breaks a
transition.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler
    from storied.worker.server import Worker


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


def call_plugin_hook(
    log: logging.Logger, name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any
) -> Awaitable[Any] | None:
    """Call a hook, logging (never raising) a failure; returns what an async hook gave back."""
    try:
        result = hook(*args, **kwargs)
    except Exception:
        log.exception("Plugin %r failed in %s", name, _hook_name(hook))
        return None
    return result if inspect.isawaitable(result) else None


async def finish_plugin_hook(
    log: logging.Logger, name: str, hook: Callable[..., Any], awaitable: Awaitable[Any]
) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("Plugin %r failed in %s", name, _hook_name(hook))


async def run_plugin_hook(
    log: logging.Logger, name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any
) -> None:
    """Call a sync or async hook and wait for it; log, never raise, if it fails."""
    awaitable = call_plugin_hook(log, name, hook, *args, **kwargs)
    if awaitable is not None:
        await finish_plugin_hook(log, name, hook, awaitable)


def _hook_name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__name__", repr(hook))
