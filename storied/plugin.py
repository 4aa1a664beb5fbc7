"""Plugins: user code that sees every transition and event on the scheduler or the workers.

A hook that raises never breaks a transition. Its failures are logged with their traceback, on
the logger of the scheduler or worker that runs it (so they show in
``get_scheduler_logs``/``get_worker_logs``), the first ``LOGGED_FAILURES_PER_HOOK`` times per
plugin and hook; after that they are only counted, and the counts go out as ``plugin-errors``
events (see ``PluginErrors``), so a plugin failing on every transition cannot flood the record.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


#: Failures of one plugin's hook logged with their traceback; later ones are counted only.
LOGGED_FAILURES_PER_HOOK = 3
#: The event topic of the failure counts.
PLUGIN_ERRORS_TOPIC = "plugin-errors"


@dataclass(slots=True)
class _HookFailures:
    total: int = 0
    reported: int = 0  # ``total`` at the last summary
    last_error: str = ""


class PluginErrors:
    """Failures of plugin hooks in one scheduler or worker: logged the first few times per
    plugin and hook, then counted; ``summary`` says what changed since it was last asked."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._failures: dict[tuple[str, str], _HookFailures] = {}

    def failed(self, name: str, hook: Callable[..., Any], error: BaseException) -> None:
        """Log the failure with its traceback, or only count it once logged enough."""
        hook_name = _hook_name(hook)
        failures = self._failures.setdefault((name, hook_name), _HookFailures())
        failures.total += 1
        failures.last_error = f"{type(error).__name__}: {error}"
        if failures.total <= LOGGED_FAILURES_PER_HOOK:
            self.log.error("Plugin %r failed in %s", name, hook_name, exc_info=error)
        if failures.total == LOGGED_FAILURES_PER_HOOK:
            self.log.error(
                "Plugin %r failed %d times in %s: further failures there are counted in "
                "%r events, not logged",
                name,
                failures.total,
                hook_name,
                PLUGIN_ERRORS_TOPIC,
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """Failures so far per ``(plugin, hook)``."""
        return {where: failures.total for where, failures in self._failures.items()}

    def summary(self) -> list[dict[str, Any]]:
        """One ``plugin-errors`` message per plugin and hook that failed since the last call."""
        messages = []
        for (name, hook_name), failures in self._failures.items():
            if failures.total == failures.reported:
                continue
            messages.append(
                {
                    "action": "plugin-errors",
                    "plugin": name,
                    "hook": hook_name,
                    "failures": failures.total - failures.reported,
                    "total": failures.total,
                    "logged": min(failures.total, LOGGED_FAILURES_PER_HOOK),
                    "last_error": failures.last_error,
                }
            )
            failures.reported = failures.total
        return messages


def call_plugin_hook(
    errors: PluginErrors, name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any
) -> Awaitable[Any] | None:
    """Call a hook, recording (never raising) a failure; returns what an async hook gave back."""
    try:
        result = hook(*args, **kwargs)
    except Exception as error:
        errors.failed(name, hook, error)
        return None
    return result if inspect.isawaitable(result) else None


async def finish_plugin_hook(
    errors: PluginErrors, name: str, hook: Callable[..., Any], awaitable: Awaitable[Any]
) -> None:
    try:
        await awaitable
    except Exception as error:
        errors.failed(name, hook, error)


async def run_plugin_hook(
    errors: PluginErrors, name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any
) -> None:
    """Call a sync or async hook and wait for it; record, never raise, a failure."""
    awaitable = call_plugin_hook(errors, name, hook, *args, **kwargs)
    if awaitable is not None:
        await finish_plugin_hook(errors, name, hook, awaitable)


async def run_setup_hook(hook: Callable[..., Any], *args: Any) -> None:
    """Run ``start``/``setup``, sync or async, letting its error reach the registering caller."""
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


def _hook_name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__name__", repr(hook))
