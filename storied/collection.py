"""Garbage collection in a dedicated storied process: what it built to start is left out of it.

A worker process imports storied, and dask with numpy and pandas when installed (tens of
thousands of objects), before it runs a task; a scheduler process builds the rings of its record
(hundreds of thousands of slots) as it starts. Python's full collections go through every
tracked object and every slot of every tracked list, and a process sees one whenever many new
objects outlive a young collection: a worker with each large batch of tasks, a scheduler with
each large graph. Measured in a warm cluster (2 workers x 1 thread, map of 10,000 no-op tasks):
the workers spent 63-203 ms of each map in collections, more the more tasks they held at once
(`scheduler.worker-backlog` 1 ms against 10 ms), and 32-44 ms once the start-up objects were
frozen; a ``storied scheduler`` holding 10,000 results took 172 ms for a full collection, 43 ms
with its start-up objects frozen (best of 5, busy machine). Only a dedicated process does this
(``storied worker``, and so ``LocalCluster(processes=True)``'s workers, and ``storied
scheduler``); a worker or scheduler in the user's own process leaves that process's collector
alone."""

from __future__ import annotations

import gc
import logging


def freeze_startup_objects(logger: logging.Logger) -> None:
    """Collect once, then move every object alive now to the collector's permanent
    generation (``gc.freeze``): it is never traversed again. Objects that die later are
    still freed by reference counting. ``logger`` says how many (debug)."""
    gc.collect()
    gc.freeze()
    logger.debug("Left %d start-up objects out of garbage collection", gc.get_freeze_count())
