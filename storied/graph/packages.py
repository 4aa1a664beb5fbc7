"""Which of dask's collection packages a graph's tasks will run code from, known before the
graph is built, so that workers can import it meanwhile (``storied.worker.preload``)."""

from __future__ import annotations

from typing import Any

#: dask's collection packages, as the workers' preload accepts them
COLLECTION_PACKAGES = ("dask.array", "dask.bag", "dask.dataframe")


def _package(module: str | None) -> str | None:
    if not module:
        return None
    for package in COLLECTION_PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return None


def collection_packages(graph: Any) -> list[str]:
    """The collection packages of ``graph`` (a dask expression: what ``dask.compute`` hands a
    scheduler), read from the expression and its direct operands' types and, for legacy
    collections, their graph optimizers; empty for a plain dict or a HighLevelGraph."""
    parts = [graph, *getattr(graph, "operands", ())]
    modules = [type(part).__module__ for part in parts]
    modules += [
        getattr(getattr(part, "low_level_optimizer", None), "__module__", None) for part in parts
    ]
    return list(dict.fromkeys(p for p in map(_package, modules) if p is not None))
