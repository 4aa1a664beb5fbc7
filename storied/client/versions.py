"""``client.get_versions``: Python and package versions of this client, the scheduler and every
worker, in Dask's shape, and (``check=True``) whether they match.

A mismatch of Python or of a package every process needs (storied and what pickles and sends
data) raises ``ValueError``; a mismatch of an optional one (dask, numpy, pandas) warns.
"""

from __future__ import annotations

import os
import platform
import struct
import sys
import warnings
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storied.client.client import Client

#: packages whose versions must match everywhere
REQUIRED = ("storied", "msgpack", "cloudpickle", "tblib", "lz4")
#: packages reported, and compared with a warning only
OPTIONAL = ("dask", "numpy", "pandas")


def local_versions(packages: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """This process's ``{"host": ..., "packages": ...}``, as Dask's ``get_versions`` gives."""
    uname = platform.uname()
    host = {
        "python": "%d.%d.%d.%s.%s" % sys.version_info,  # noqa: UP031 (Dask's format)
        "python-bits": struct.calcsize("P") * 8,
        "OS": uname.system,
        "OS-release": uname.release,
        "machine": uname.machine,
        "processor": uname.processor,
        "byteorder": sys.byteorder,
        "LC_ALL": os.environ.get("LC_ALL", "None"),
        "LANG": os.environ.get("LANG", "None"),
    }
    names = dict.fromkeys([*REQUIRED, *OPTIONAL, *packages])
    return {"host": host, "packages": {"python": host["python"], **_installed(names)}}


def _installed(names: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


async def get_versions(client: Client, check: bool, packages: Any) -> dict[str, Any]:
    packages = [] if packages is None else packages
    if isinstance(packages, str) or not all(isinstance(p, str) for p in packages):
        raise TypeError(f"packages must be a list of package names, not {packages!r}")
    packages = list(packages)
    scheduler = await client._run_on_scheduler(local_versions, (packages,), {})
    workers = await client._run(local_versions, (packages,), {}, None, "ignore")
    versions = {"scheduler": scheduler, "workers": workers, "client": local_versions(packages)}
    if check:
        errors, notes = _mismatches(versions)
        if notes:
            warnings.warn(notes, stacklevel=3)
        if errors:
            raise ValueError(errors)
    return versions


def _mismatches(versions: dict[str, Any]) -> tuple[str, str]:
    """What differs between the processes: (required mismatches, optional mismatches)."""
    where = {
        "client": versions["client"],
        "scheduler": versions["scheduler"],
        **versions["workers"],
    }
    required, optional = [], []
    for package in ["python", *REQUIRED, *OPTIONAL]:
        seen = {name: info["packages"].get(package) for name, info in where.items()}
        if len(set(seen.values())) > 1:
            line = f"{package}: " + ", ".join(f"{name} {v}" for name, v in seen.items())
            (optional if package in OPTIONAL else required).append(line)
    return _report(required), _report(optional)


def _report(lines: list[str]) -> str:
    return "Mismatched versions:\n" + "\n".join(lines) if lines else ""
