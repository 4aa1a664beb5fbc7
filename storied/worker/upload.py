"""Files a client uploads to every worker (``client.upload_file``): written into the worker's
local directory, put on ``sys.path`` and imported (again, if an older version was), as Dask's.

A ``.py`` file is one module; a ``.zip`` or ``.egg`` goes on ``sys.path`` itself and each
top-level module or package inside it is imported.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from storied.plugin import WorkerPlugin

if TYPE_CHECKING:
    from storied.worker.server import Worker

logger = logging.getLogger("storied.worker")

#: what ``upload_file`` takes
SUFFIXES = (".py", ".zip", ".egg")
#: the topics of the ``upload-file`` event each worker logs
EVENT_TOPICS = ["all", "upload-file"]


def check_upload_name(filename: str) -> str:
    """The bare file name a worker writes, or ``ValueError`` for one it would not import."""
    name = os.path.basename(filename)
    if not name or name != filename or not name.endswith(SUFFIXES):
        raise ValueError(
            f"upload_file takes a .py, .zip or .egg file name without directories, not {filename!r}"
        )
    return name


def install(directory: str, filename: str, data: bytes, load: bool = True) -> list[str]:
    """Write ``data`` as ``directory/filename``, put it on ``sys.path`` and import it; the
    names of the modules imported. Raises whatever the import raises."""
    name = check_upload_name(filename)
    path = Path(directory) / name
    path.write_bytes(data)
    entry = directory if name.endswith(".py") else str(path)
    if entry not in sys.path:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()
    if not load:
        return []
    modules = [name[: -len(".py")]] if name.endswith(".py") else _top_level_modules(path)
    for module in modules:
        _drop_cached(module)
        importlib.import_module(module)
    logger.info("Uploaded %s (%d bytes): imported %s", name, len(data), modules or "nothing")
    return modules


def _top_level_modules(archive: Path) -> list[str]:
    names = set()
    with zipfile.ZipFile(archive) as opened:
        for member in opened.namelist():
            parts = PurePosixPath(member).parts
            if len(parts) == 1 and parts[0].endswith(".py"):
                names.add(parts[0][: -len(".py")])
            elif len(parts) == 2 and parts[1] == "__init__.py":
                names.add(parts[0])
    return sorted(names)


def _drop_cached(module: str) -> None:
    """Forget an older upload of ``module`` (and its submodules), so the new one is read."""
    for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[loaded]


def upload_event(filename: str, size: int, modules: list[str]) -> dict[str, Any]:
    return {"action": "upload-file", "filename": filename, "bytes": size, "modules": modules}


class UploadFile(WorkerPlugin):
    """How the scheduler keeps an upload for workers that join later (a restarted one too);
    those log a failed import, as any plugin's setup."""

    def __init__(self, filename: str, data: bytes, load: bool = True) -> None:
        self.filename, self.data, self.load = filename, data, load
        self.name = f"upload-file-{filename}"

    def setup(self, worker: Worker) -> None:
        worker.upload_file(self.filename, self.data, self.load)
