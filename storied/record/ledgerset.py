"""Several ledger files read as one, as a history server reads every scheduler's file.

Run ids are numbered per file, so across files a run is named ``FILE:ID`` (``a.db:3``, the
file's name in its directory): every record a ``LedgerSet`` returns carries such a run id, and
its queries take one. Seqs are per file too, so records of different files are ordered by time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from storied.record.events import EventRecord
from storied.record.ledger import Ledger
from storied.record.logcapture import LogRecordEntry
from storied.record.transitions import TransitionRecord

LEDGER_SUFFIXES = (".db", ".sqlite", ".ledger")


def ledger_files(path: str | Path) -> list[Path]:
    """The ledger file at ``path``, or every ``*.db``/``*.sqlite``/``*.ledger`` file in that
    directory. Raises ``FileNotFoundError`` saying what was looked for."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in LEDGER_SUFFIXES and p.is_file())
        if found:
            return found
        raise FileNotFoundError(f"no ledger files (*.db, *.sqlite, *.ledger) in {path}")
    raise FileNotFoundError(f"no ledger file or directory at {path}")


class LedgerSet:
    """The queries of ``Ledger`` over several files, with runs named ``FILE:ID``."""

    def __init__(self, paths: Iterable[str | Path]) -> None:
        self.ledgers = {Path(path).name: Ledger(path) for path in paths}

    def _resolve(self, run_id: str | None) -> list[tuple[str, Ledger, int | None]]:
        """``(file name, ledger, run id in it)`` for ``run_id`` (``FILE:ID``), or every file
        (run id None) when it is None."""
        if run_id is None:
            return [(name, ledger, None) for name, ledger in self.ledgers.items()]
        name, _, number = str(run_id).rpartition(":")
        if name not in self.ledgers or not number.isdigit():
            raise KeyError(
                f"no run {run_id!r}: runs of several ledgers are named FILE:ID, one of "
                f"{', '.join(self.ledgers)} and a run id in it (see `storied runs`)"
            )
        return [(name, self.ledgers[name], int(number))]

    def _each(
        self, run_id: str | None, query: Callable[[Ledger, int | None], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """``query(ledger, run id)`` of each file concerned, its rows' ``run_id`` relabelled."""
        return [
            {**row, "run_id": f"{name}:{row['run_id']}", "ledger": str(ledger.path)}
            for name, ledger, number in self._resolve(run_id)
            for row in query(ledger, number)
        ]

    def runs(self) -> list[dict[str, Any]]:
        """Every run of every file, oldest first."""
        return sorted(self._each(None, lambda ledger, _: ledger.runs()), key=_started)

    def run_summaries(self) -> list[dict[str, Any]]:
        return sorted(self._each(None, lambda ledger, _: ledger.run_summaries()), key=_started)

    def _one(self, run_id: str) -> tuple[Ledger, int]:
        [(_, ledger, number)] = self._resolve(run_id)
        assert number is not None
        return ledger, number

    def story(self, *keys: str, run_id: str) -> list[TransitionRecord]:
        ledger, number = self._one(run_id)
        return ledger.story(*keys, run_id=number)

    def events(
        self,
        topic: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        *,
        run_id: str | None = None,
        after_seq: int | None = None,
        leave_out: Collection[str] = (),
    ) -> list[EventRecord]:
        """One run's events, or (``run_id`` None) every file's, by time: seqs are per file."""
        if run_id is None:
            found = [
                event
                for _, ledger, _ in self._resolve(None)
                for event in ledger.events(
                    topic, since, until, limit, after_seq=after_seq, leave_out=leave_out
                )
            ]
            found.sort(key=lambda event: event.timestamp)
            return found if limit is None else found[-limit:]
        ledger, number = self._one(run_id)
        return ledger.events(
            topic, since, until, limit, run_id=number, after_seq=after_seq, leave_out=leave_out
        )

    def logs(self, *, run_id: str, **filters: Any) -> list[LogRecordEntry]:
        ledger, number = self._one(run_id)
        return ledger.logs(run_id=number, **filters)

    def executions(self, run_id: str | None = None) -> list[dict[str, Any]]:
        return self._each(run_id, lambda ledger, number: ledger.executions(number))

    def failures(
        self, keys: Iterable[str] | None = None, *, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        key_list = None if keys is None else list(keys)
        return self._each(run_id, lambda ledger, number: ledger.failures(key_list, run_id=number))

    def tasks(
        self, *, run_id: str | None = None, slowest: int | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """``Ledger.tasks`` of every file (or of ``run_id``'s); ``slowest`` across them all."""
        found = self._each(
            run_id,
            lambda ledger, number: ledger.tasks(run_id=number, slowest=slowest, **filters),
        )
        if slowest is None:
            return found
        return sorted(found, key=lambda row: row["duration"], reverse=True)[:slowest]


def _started(run: dict[str, Any]) -> float:
    return run["started"]
