"""Ready-made plugins that put more on the record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied.plugin import SchedulerPlugin

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler


class RuntimesPlugin(SchedulerPlugin):
    """Logs every task run (start, stop, worker, duration, outcome) to the ``runtimes`` topic.

    What the logging docs show done by hand inside each task, for every task, with no change to
    user code: ``client.register_plugin(RuntimesPlugin())``.
    """

    name = "runtimes"
    idempotent = True

    def __init__(self, topic: str = "runtimes") -> None:
        self.topic = topic
        self.scheduler: Scheduler | None = None

    def start(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def transition(
        self,
        key: str,
        start: str,
        finish: str,
        *args: Any,
        stimulus_id: str,
        startstops: tuple[float, float] | None = None,
        worker: str | None = None,
        **kwargs: Any,
    ) -> None:
        if self.scheduler is None or start != "processing" or startstops is None:
            return
        begin, end = startstops
        self.scheduler.log_event(
            self.topic,
            {
                "key": key,
                "start": begin,
                "stop": end,
                "duration": end - begin,
                "worker": worker,
                "outcome": finish,
            },
        )
