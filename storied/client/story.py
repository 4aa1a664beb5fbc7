"""Entries of a cluster-wide story (``client.story``), shaped as Dask's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class _DaskStoryFields(NamedTuple):
    where: str
    key: str
    start: str
    finish: str
    recommendations: dict[str, str]
    stimulus_id: str
    timestamp: float


class StoryEntry(_DaskStoryFields):
    """One transition of a cluster-wide story.

    It unpacks as Dask's ``(where, key, start, finish, recommendations, stimulus_id,
    timestamp)``, ``where`` being ``"scheduler"`` or a worker's address, and also reads by
    attribute or by field name (``entry.worker``, ``entry["seq"]``), with what storied adds:
    ``worker``, the worker a scheduler transition concerns, ``seq``, its place in the log
    it came from, ``run_id``, the ledger run it belongs to (None without a ledger), and
    ``failure``: for the scheduler transition a failure caused (to ``erred``, or back to
    ``released`` for a retry), the exception type, message, traceback, attempt and worker.
    """

    worker: str | None
    seq: int
    run_id: int | None
    failure: dict[str, Any] | None

    def __new__(cls, record: Mapping[str, Any]) -> StoryEntry:
        entry = super().__new__(
            cls,
            record["where"],
            record["key"],
            record["start"],
            record["finish"],
            record["recommendations"],
            record["stimulus_id"],
            record["timestamp"],
        )
        entry.worker = record.get("worker")
        entry.seq = record.get("seq", 0)
        entry.run_id = record.get("run_id")
        entry.failure = record.get("failure")
        return entry

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            try:
                return getattr(self, item)
            except AttributeError:
                raise KeyError(item) from None
        return super().__getitem__(item)

    def as_dict(self) -> dict[str, Any]:
        """Every field by name, storied's included."""
        return {
            **self._asdict(),
            "worker": self.worker,
            "seq": self.seq,
            "run_id": self.run_id,
            "failure": self.failure,
        }

    def __reduce__(self) -> Any:
        return StoryEntry, (self.as_dict(),)
