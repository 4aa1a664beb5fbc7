"""Task functions, plugins and small utilities shared by the "on the record" integration tests.

This module is pickled by value, so worker processes (which cannot import tests) can run its
functions and unpickle its plugins.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Callable
from typing import Any

import cloudpickle
import msgpack

from storied import LocalCluster, SchedulerPlugin, WorkerPlugin, get_worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: what the TypeError must say for each way of breaking the msgpack rule (see ``bad_event``)
BAD_EVENTS: dict[str, str] = {
    "numpy-like value": "msg['x'][2] is numpy.int64",
    "plain object": "msg['deep'][0]['y'] is object",
    "non-str dict key": "msg['outer'] has a key 1 of type int",
    "non-str topic": "got int",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def small_cluster(n_workers: int = 1) -> LocalCluster:
    """A cluster of our own, for tests that add, remove or kill workers."""
    return LocalCluster(
        n_workers=n_workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    )


def inc(x: int) -> int:
    return x + 1


def fail(x: Any) -> None:
    raise ZeroDivisionError(f"cannot handle {x!r}")


def log_from_task(topic: str | list[str], msg: Any) -> str:
    """Log one event from inside a task; returns the worker's address."""
    worker = get_worker()
    worker.log_event(topic, msg)
    return worker.address


def send_malformed_event_batch(topic: str, dask_worker: Any = None) -> None:
    """Stand in for a buggy worker: one batch of events, good ones around malformed ones."""
    dask_worker.stream.send(
        {
            "op": "log-events",
            "events": [
                [[topic], msgpack.packb("first")],
                "not a pair",
                [[topic], b"\xc1"],  # a byte msgpack never uses
                [[topic, 3], msgpack.packb("a topic that is not a str")],
                [[topic], "a message that is not packed"],
                [[topic], msgpack.packb("last")],
            ],
        }
    )


def log_many_from_task(topic: str, task: int, n: int) -> None:
    worker = get_worker()
    for i in range(n):
        worker.log_event(topic, {"task": task, "i": i})


def log_reusing_one_dict(log_event: Callable[[str, Any], Any], topic: str, n: int) -> None:
    """The common loop that fills one dict and logs it each time round."""
    progress = {"i": 0}
    for i in range(n):
        progress["i"] = i
        log_event(topic, progress)


def log_reusing_one_dict_from_task(topic: str, n: int) -> None:
    log_reusing_one_dict(get_worker().log_event, topic, n)


def log_reusing_one_dict_from_scheduler(topic: str, n: int, dask_scheduler: Any) -> None:
    log_reusing_one_dict(dask_scheduler.log_event, topic, n)


def log_from_scheduler(topic: str | list[str], msg: Any, dask_scheduler: Any) -> None:
    dask_scheduler.log_event(topic, msg)


def bad_event(case: str, topic: str) -> tuple[Any, Any]:
    """``(topic, msg)`` breaking the rule named ``case``, built in the process that logs it."""
    if case == "non-str topic":
        return 5, {"fine": True}
    numpy_like = type("int64", (), {"__module__": "numpy"})
    msg = {
        "numpy-like value": {"x": [1, 2, numpy_like()]},
        "plain object": {"deep": [{"y": object()}]},
        "non-str dict key": {"outer": {1: "one"}},
    }[case]
    return topic, msg


def log_bad_event_from_task(case: str, topic: str) -> None:
    get_worker().log_event(*bad_event(case, topic))


def log_bad_event_from_scheduler(case: str, topic: str, dask_scheduler: Any) -> None:
    dask_scheduler.log_event(*bad_event(case, topic))


def log_on_worker(messages: list[str], dask_worker: Any) -> str:
    """Log ``messages`` in order through the worker's logger; returns the worker's address."""
    for message in messages:
        logging.getLogger("storied.worker").info(message)
    return dask_worker.address


def log_on_scheduler(messages: list[str], dask_scheduler: Any) -> None:
    for message in messages:
        logging.getLogger("storied.scheduler").info(message)


def own_story_from_the_task(x: int) -> list[tuple[str, str]]:
    """A task reading its worker's story of itself, on the task's own thread, while the
    worker's loop goes on recording."""
    worker = get_worker()
    key = worker.get_current_task()
    return [(start, finish) for _, start, finish, *_ in worker.story(key)]


def worker_story(key: str, dask_worker: Any) -> list[tuple[Any, ...]]:
    return dask_worker.story(key)


def break_worker_story(dask_worker: Any) -> None:
    """Make this worker fail to answer story requests, as a worker in trouble would."""

    def refuse(*keys: str, where: str | None = None) -> list[Any]:
        raise OSError("story unavailable")

    dask_worker.record.story_records = refuse


def mend_worker_story(dask_worker: Any) -> None:
    del dask_worker.record.story_records


class HookRecorder(SchedulerPlugin):
    """Records every hook call with its arguments; read it on the scheduler's copy."""

    name = "hook-recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start(self, scheduler: Any) -> None:
        self.calls.append(("start", scheduler))

    def close(self) -> None:
        self.calls.append(("close",))

    def update_graph(
        self, scheduler: Any, *, client: str, keys: Any, tasks: Any, **kw: Any
    ) -> None:
        self.calls.append(("update_graph", scheduler, client, keys, tasks, kw))

    def transition(
        self, key: str, start: str, finish: str, *args: Any, stimulus_id: str, **kw: Any
    ) -> None:
        self.calls.append(("transition", key, start, finish, args, stimulus_id, kw))

    def add_worker(self, scheduler: Any, worker: str) -> None:
        self.calls.append(("add_worker", scheduler, worker))

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kw: Any) -> None:
        self.calls.append(("remove_worker", scheduler, worker, stimulus_id, kw))

    def add_client(self, scheduler: Any, client: str) -> None:
        self.calls.append(("add_client", scheduler, client))

    def remove_client(self, scheduler: Any, client: str) -> None:
        self.calls.append(("remove_client", scheduler, client))

    def log_event(self, topic: str, msg: Any) -> None:
        self.calls.append(("log_event", topic, msg))

    def hooks(self, name: str) -> list[tuple[Any, ...]]:
        """The calls of hook ``name``, without the hook name."""
        return [call[1:] for call in self.calls if call[0] == name]


class AsyncHookRecorder(HookRecorder):
    """The same, with every hook that can be awaited written as a coroutine function."""

    name = "async-hook-recorder"

    async def start(self, scheduler: Any) -> None:  # type: ignore[override]
        await _yield_to_loop()
        super().start(scheduler)

    async def close(self) -> None:  # type: ignore[override]
        await _yield_to_loop()
        super().close()

    async def update_graph(  # type: ignore[override]
        self, scheduler: Any, *, client: str, keys: Any, tasks: Any, **kw: Any
    ) -> None:
        await _yield_to_loop()
        super().update_graph(scheduler, client=client, keys=keys, tasks=tasks, **kw)

    async def add_worker(self, scheduler: Any, worker: str) -> None:  # type: ignore[override]
        await _yield_to_loop()
        super().add_worker(scheduler, worker)

    async def remove_worker(  # type: ignore[override]
        self, scheduler: Any, worker: str, *, stimulus_id: str, **kw: Any
    ) -> None:
        await _yield_to_loop()
        super().remove_worker(scheduler, worker, stimulus_id=stimulus_id, **kw)

    async def add_client(self, scheduler: Any, client: str) -> None:  # type: ignore[override]
        await _yield_to_loop()
        super().add_client(scheduler, client)

    async def remove_client(self, scheduler: Any, client: str) -> None:  # type: ignore[override]
        await _yield_to_loop()
        super().remove_client(scheduler, client)


async def _yield_to_loop() -> None:
    """Suspend once, so a hook that is called but never awaited records nothing."""
    await asyncio.sleep(0)


class Exploder(SchedulerPlugin):
    """Raises from the one hook it is told to."""

    name = "exploder"

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _maybe_explode(self, hook: str) -> None:
        if hook == self.hook:
            raise RuntimeError(f"exploder blew up in {hook}")

    def start(self, scheduler: Any) -> None:
        self._maybe_explode("start")

    def update_graph(self, scheduler: Any, **kw: Any) -> None:
        self._maybe_explode("update_graph")

    def transition(self, key: str, start: str, finish: str, *args: Any, **kw: Any) -> None:
        self._maybe_explode("transition")

    def add_client(self, scheduler: Any, client: str) -> None:
        self._maybe_explode("add_client")

    def remove_client(self, scheduler: Any, client: str) -> None:
        self._maybe_explode("remove_client")

    def log_event(self, topic: str, msg: Any) -> None:
        self._maybe_explode("log_event")


class WorkerExploder(WorkerPlugin):
    """Raises from the one worker hook it is told to."""

    name = "worker-exploder"

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _maybe_explode(self, hook: str) -> None:
        if hook == self.hook:
            raise RuntimeError(f"worker-exploder blew up in {hook}")

    def setup(self, worker: Any) -> None:
        self._maybe_explode("setup")

    def teardown(self, worker: Any) -> None:
        self._maybe_explode("teardown")

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        self._maybe_explode("transition")


class CountingSchedulerPlugin(SchedulerPlugin):
    name = "counting-scheduler-plugin"
    idempotent = True

    def __init__(self) -> None:
        self.starts = 0

    def start(self, scheduler: Any) -> None:
        self.starts += 1


class TransitionWatcher(WorkerPlugin):
    """Keeps what it sees on each worker; announces setup and teardown as events."""

    def __init__(self, name: str, topic: str, idempotent: bool = False) -> None:
        self.name = name
        self.topic = topic
        self.idempotent = idempotent
        self.setups = 0
        self.transitions: list[tuple[str, str, str, dict[str, Any]]] = []

    def setup(self, worker: Any) -> None:
        self.setups += 1
        self.worker = worker
        worker.log_event(self.topic, {"hook": "setup", "worker": worker.address})

    def teardown(self, worker: Any) -> None:
        worker.log_event(self.topic, {"hook": "teardown", "worker": worker.address})

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        self.transitions.append((key, start, finish, kwargs))


def plugin_state(name: str, dask_worker: Any) -> dict[str, Any] | None:
    """What a TransitionWatcher named ``name`` saw on this worker (None if not installed)."""
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        return None
    return {"id": id(plugin), "setups": plugin.setups, "transitions": plugin.transitions}


class TransitionFlooder(SchedulerPlugin):
    """Raises on every transition, counting them: a plugin that would flood the log."""

    name = "flooder"

    def __init__(self) -> None:
        self.calls = 0

    def transition(self, key: str, start: str, finish: str, *args: Any, **kw: Any) -> None:
        self.calls += 1
        raise ValueError(f"flooder fails on {key}")


class WorkerTransitionFlooder(WorkerPlugin):
    """Raises on every transition on a worker."""

    name = "worker-flooder"

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        raise ValueError(f"worker-flooder fails on {key}")


def chatty_task(name: str) -> str:
    """Prints and logs (a user logger) twice, meeting a sibling task on another thread of the
    same worker in between, so both run at once."""
    import threading

    worker = get_worker()
    barrier = worker.__dict__.setdefault("test_barrier", threading.Barrier(2))
    user_logger = logging.getLogger("user.chatty")
    print(f"{name} printed before")
    user_logger.warning("%s logged before", name)
    barrier.wait(timeout=10)
    print(f"{name} printed", end="")
    print(" after")  # one line from two writes
    print(f"{name} complained", file=sys.stderr)
    user_logger.error("%s logged after", name)
    return name


def stdout_is_wrapped() -> bool:
    from storied.worker.tasklogs import _TeeStream

    return isinstance(sys.stdout, _TeeStream)
