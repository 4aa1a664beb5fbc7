"""Ready-made worker plugins of dask.distributed: ``UploadFile`` and ``Environ``.

Registered with ``client.register_plugin(...)``, each runs on every worker, and on workers that
join later, as Dask's do. storied has no nanny plugins, so ``Environ`` is a worker plugin here:
it sets the variables in the running worker process instead of restarting it with them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storied.plugin import WorkerPlugin
from storied.worker import upload

if TYPE_CHECKING:
    from storied.worker.server import Worker

logger = logging.getLogger("storied.worker")

#: the topic of the event each worker logs when ``Environ`` sets its variables
ENVIRON_TOPIC = "environ"


class UploadFile(upload.UploadFile):
    """Send a ``.py``, ``.zip`` or ``.egg`` file to every worker, which puts it on
    ``sys.path`` and imports it (unless ``load=False``): ``client.upload_file`` as a plugin.
    The file is read when the plugin is made; each upload is on the record (``upload-file``).
    """

    def __init__(self, filepath: str | os.PathLike[str], load: bool = True) -> None:
        path = Path(filepath)
        super().__init__(upload.check_upload_name(path.name), path.read_bytes(), load)


class Environ(WorkerPlugin):
    """Set environment variables in every worker process, as Dask's ``Environ`` does.

    Unlike Dask's (a nanny plugin that restarts the workers), the variables are set in the
    running worker: tasks see them, but what a library read when it was imported (such as
    ``OMP_NUM_THREADS``) does not change; set those before starting the workers. Each worker
    logs an ``environ`` event naming the variables (not their values, which may be secrets).
    """

    name = "environ"

    def __init__(self, environ: dict[str, Any] | None = None) -> None:
        if environ is not None and not isinstance(environ, dict):
            raise TypeError(f"Environ takes a dict of variables, not {type(environ).__name__}")
        self.environ = {str(key): str(value) for key, value in (environ or {}).items()}

    def setup(self, worker: Worker) -> None:
        os.environ.update(self.environ)
        names = sorted(self.environ)
        logger.info("Environ plugin set %s", names)
        worker.log_event(ENVIRON_TOPIC, {"action": "environ", "variables": names})
