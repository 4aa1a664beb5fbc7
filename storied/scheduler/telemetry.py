"""The scheduler's side of resource telemetry: each worker's samples, kept and recorded.

Workers send a sample with every heartbeat (``storied.worker.telemetry``). The scheduler keeps
the newest ``scheduler.worker-metrics-length`` of each worker in memory (a departed worker's
too, so its last minutes can be read after it died, for the newest ``_DEPARTED_KEPT`` of them)
and logs each sample as an event under the ``worker-metrics`` topic, so a ledger keeps them
after the cluster is gone (``storied top``) and a client can subscribe to them.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from storied import config
from storied.worker.telemetry import SAMPLE_FIELDS

if TYPE_CHECKING:
    from storied.scheduler.server import Scheduler

logger = logging.getLogger("storied.scheduler")

#: the event topic of the samples
METRICS_TOPIC = "worker-metrics"
#: topics of periodic samples: ``storied events`` without a topic leaves them out (they
#: would drown the rest) unless asked for ``--all``
TELEMETRY_TOPICS = (METRICS_TOPIC,)
#: how many departed workers' histories stay in memory
_DEPARTED_KEPT = 100


def checked_sample(metrics: Any) -> dict[str, Any] | None:
    """A worker's sample with exactly ``SAMPLE_FIELDS`` as numbers (or None), else None: a
    malformed sample is dropped, never stored."""
    if not isinstance(metrics, dict):
        return None
    sample = {}
    for field in SAMPLE_FIELDS:
        value = metrics.get(field)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return None
        sample[field] = value
    return sample if sample["time"] is not None else None


class WorkerTelemetry:
    """The scheduler extension keeping worker samples; answers ``worker-metrics``."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.length = int(config.get("scheduler.worker-metrics-length"))
        #: address -> its newest samples, oldest first
        self.history: dict[str, collections.deque[dict[str, Any]]] = {}
        #: addresses of departed workers whose history is still kept, oldest departure first
        self._departed: collections.deque[str] = collections.deque()
        self.names: dict[str, str] = {}
        self._warned: set[str] = set()
        #: samples kept so far: the dashboard's status push looks whether it grew
        self.received = 0

    def client_handlers(self) -> dict[str, Callable[..., Any]]:
        return {"worker-metrics": self._worker_metrics}

    def remove_client(self, client: str) -> None:
        return None

    def remove_worker(self, address: str) -> None:
        if address not in self.history:
            return
        self._departed.append(address)
        while len(self._departed) > _DEPARTED_KEPT:
            gone = self._departed.popleft()
            self.history.pop(gone, None)
            self.names.pop(gone, None)

    def add_sample(self, address: str, name: str, metrics: Any) -> None:
        """Keep and record one heartbeat's sample from the worker at ``address``."""
        sample = checked_sample(metrics)
        if sample is None:
            if address not in self._warned:
                self._warned.add(address)
                logger.warning("Dropping malformed resource samples from worker %s", address)
            return
        samples = self.history.get(address)
        if samples is None:
            samples = self.history[address] = collections.deque(maxlen=self.length)
            self.names[address] = name
        samples.append(sample)
        self.received += 1
        self.scheduler.log_event(METRICS_TOPIC, {"worker": address, "name": name, **sample})

    def newest(self, address: str) -> dict[str, Any] | None:
        """The worker's newest sample (Dask's ``scheduler_info()`` worker ``metrics``)."""
        samples = self.history.get(address)
        return samples[-1] if samples else None

    def _worker_metrics(
        self, client: str, workers: list[str] | None = None, since: float | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Each worker's samples kept in memory (of ``workers``, by address or name; from
        ``since`` on)."""
        wanted = None if workers is None else set(workers)
        return {
            address: [s for s in samples if since is None or s["time"] >= since]
            for address, samples in self.history.items()
            if wanted is None or address in wanted or self.names.get(address) in wanted
        }
