"""What storied does not do of dask.distributed's public API, and why.

``docs/dask-compatibility.md`` lists every public name of dask.distributed's ``Client``,
``Future``, ``LocalCluster`` and top-level module with its status in storied; the names it marks
*not supported* are the ones below. Reaching for one raises ``NotImplementedError`` that names
the page, never a bare ``AttributeError`` that looks like a typo.
"""

from __future__ import annotations

PAGE = "docs/dask-compatibility.md"

#: owner ("storied" for the top-level module) -> name -> why it is not supported
NOT_SUPPORTED: dict[str, dict[str, str]] = {}


class NotSupportedError(NotImplementedError, AttributeError):
    """A dask.distributed name storied does not support. Also an AttributeError, so that
    ``hasattr`` and ``getattr(obj, name, default)`` still answer as for any missing name."""


def missing(owner: str, name: str) -> AttributeError:
    """The error to raise for ``owner.name``, which does not exist: a ``NotSupportedError``
    naming the page for a Dask name storied does not support, else the usual AttributeError."""
    reason = NOT_SUPPORTED.get(owner, {}).get(name)
    if reason is not None:
        return NotSupportedError(
            f"{owner}.{name} (from dask.distributed) is not supported by storied: {reason}. "
            f"See {PAGE} for what storied supports and what to use instead."
        )
    kind = "module 'storied'" if owner == "storied" else f"{owner!r} object"
    return AttributeError(f"{kind} has no attribute {name!r}")
