"""Garbage collection in a worker process: what it built to start is left out of it.

A worker process imports storied, and dask with numpy and pandas when installed (tens of
thousands of objects), before it runs a task. Python's full collections go through every
tracked object, and a worker sees one whenever many new objects outlive a young collection:
each large batch of tasks it is sent. Measured in a warm cluster (2 workers x 1 thread,
map of 10,000 no-op tasks): the workers spent 63-203 ms of each map in collections, more the
more tasks they held at once (`scheduler.worker-backlog` 1 ms against 10 ms), and 32-44 ms
once the start-up objects were frozen. Only a dedicated worker process does this (``storied
worker``, and so ``LocalCluster(processes=True)``); a worker in the user's own process leaves
that process's collector alone.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("storied.worker")


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive now to the collector's permanent
    generation (``gc.freeze``): it is never traversed again. Objects that die later are
    still freed by reference counting."""
    gc.collect()
    gc.freeze()
    logger.debug("Left %d start-up objects out of garbage collection", gc.get_freeze_count())
