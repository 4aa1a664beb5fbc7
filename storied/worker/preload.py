"""Importing the code a computation is about to need while its graph is still being built.

A client computing a dask collection spends a while building and converting its graph before
the first task reaches a worker; that worker then imports the collection's package (``dask.array``
takes 0.2 s) inside the first task, and every task behind it waits. The client names the
packages as it starts (``storied.graph.api``), the scheduler passes the names on, and each worker
imports them meanwhile.

The import runs on the worker's event loop and only while no task runs: no other thread of the
worker can then be importing at the same time (two threads importing one package concurrently
can see each other's modules half-initialized). A busy worker imports in its first task, as
before. Only packages of dask's own collections are imported this way: a worker never imports a
name just because a message says so.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time

from storied.graph.packages import COLLECTION_PACKAGES

logger = logging.getLogger("storied.worker")

#: what a client may ask workers to import ahead of its tasks
PRELOADABLE = frozenset(COLLECTION_PACKAGES)


def missing(modules: object) -> list[str]:
    """The preloadable names in ``modules`` (a list from the wire: anything else names none)
    that this process has not imported yet."""
    if not isinstance(modules, list):
        return []
    return [m for m in modules if isinstance(m, str) and m in PRELOADABLE and m not in sys.modules]


def import_now(modules: object) -> list[str]:
    """Import ``missing(modules)``; the names imported. Each import is logged (once per worker
    and package) with its duration; one that fails is logged and left for the task that needs
    it to fail with its own error."""
    imported = []
    for name in missing(modules):
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # the same error surfaces again in the task that needs it
            logger.warning("Could not import %s ahead of its tasks: %r", name, exc)
            continue
        imported.append(name)
        logger.info(
            "Imported %s ahead of its tasks in %.0f ms",
            name,
            1000 * (time.perf_counter() - started),
        )
    return imported
