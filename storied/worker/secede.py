"""Tasks that wait on other tasks: leave the worker's thread pool meanwhile, and come back.

A task blocked on results of tasks it launched holds a thread slot that those tasks may need
(with one thread per worker, a recursive computation would deadlock). ``secede`` gives the
slot to the next ready task; ``rejoin`` waits for a free slot before going on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from storied.worker.server import Worker, get_worker, task_holds_thread_slot


def _running_task() -> tuple[Worker, str]:
    worker = get_worker()
    key = worker.get_current_task()
    if key is None:
        raise ValueError("secede() and rejoin() only work inside a task running on a worker")
    return worker, key


def secede() -> None:
    """Have the running task leave its worker's thread pool, so another task can run.

    Nothing happens if the task has already seceded. Call ``rejoin()`` to take a slot again.
    """
    worker, key = _running_task()
    if worker.executor.secede_current_thread():
        worker.loop.call_soon_threadsafe(worker._secede, key)


def rejoin() -> None:
    """Have a seceded task take a thread slot again; blocks until one is free.

    Nothing happens if the task has not seceded.
    """
    worker, key = _running_task()
    worker.executor.rejoin_current_thread(key)


@contextlib.contextmanager
def slot_given_up_while_waiting() -> Iterator[None]:
    """Around a blocking client call: a task holding a thread slot secedes for the wait and
    rejoins after it, so the tasks it waits for can run on its worker's threads."""
    if not task_holds_thread_slot():
        yield
        return
    secede()
    try:
        yield
    finally:
        rejoin()
