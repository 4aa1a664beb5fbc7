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
    ``worker``, the worker a scheduler transition concerns, and ``seq``, its place in the log
    it came from.
    """

    worker: str | None
    seq: int

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
        return {**self._asdict(), "worker": self.worker, "seq": self.seq}

    def __reduce__(self) -> Any:
        return StoryEntry, (self.as_dict(),)
