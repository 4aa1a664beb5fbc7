"""What a Dask user watches a computation with: ``progress`` bars, the task stream
(``get_task_stream``) and ``performance_report`` files, all read from the record; and ready-made
plugins that put more on it (``RuntimesPlugin``)."""

from storied.diagnostics.plugins import RuntimesPlugin
from storied.diagnostics.progress import progress
from storied.diagnostics.report import performance_report
from storied.diagnostics.task_stream import get_task_stream

__all__ = ["RuntimesPlugin", "get_task_stream", "performance_report", "progress"]
