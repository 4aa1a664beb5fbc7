"""What the ledger costs, per stage, replayed from a captured run on one thread.

A cluster measurement of the ledger's cost swings with whatever else the machine runs. This
captures every frame the writer thread appended to the journal while a workload ran, then
replays them into a fresh file on one thread: first appending them to a journal, as the
writer thread does in the scheduler's process, then indexing that journal, as the indexer
process does (``storied.record.indexer``), and prints the CPU per task of each, the indexer's
split by stage: building blocks (packing and compressing), each table's inserts, the run's
tally and summary, and commits. Replays of one capture compare versions with nothing else
changed.

    .venv/bin/python bench/ledger_replay.py --capture /tmp/tree.pickle --size 4096 --rounds 4
    .venv/bin/python bench/ledger_replay.py --replay /tmp/tree.pickle --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import ledger_ab
from ledger_ab import WORKLOADS

from storied import Client, LocalCluster
from storied.record import indexer as indexer_module
from storied.record import journal as journal_module
from storied.record import ledger as ledger_module

cloudpickle.register_pickle_by_value(ledger_ab)  # workers cannot import bench/


def capture(path: Path, workload: str, size: int, rounds: int) -> None:
    """Run ``workload`` ``rounds`` times on a cluster with a ledger, keeping every frame the
    writer appended to the journal (pickled as it was handed over) and the tasks run."""
    frames: list[bytes] = []
    append = journal_module.JournalWriter.append

    def keeping(journal: journal_module.JournalWriter, items: list[Any]) -> None:
        frames.append(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))
        append(journal, items)

    journal_module.JournalWriter.append = keeping  # type: ignore[method-assign]
    try:
        with (
            tempfile.TemporaryDirectory() as directory,
            LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                dashboard_address=None,
                ledger=Path(directory) / "ledger.db",
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            tasks = sum(WORKLOADS[workload](client, size) for _ in range(rounds))
            cluster.scheduler.record.flush()
    finally:
        journal_module.JournalWriter.append = append  # type: ignore[method-assign]
    path.write_bytes(pickle.dumps({"tasks": tasks, "frames": frames}))
    print(f"captured {len(frames)} frames of {tasks:,} tasks into {path}")


class _Stages:
    """CPU time of this thread per stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.seconds[stage] += time.thread_time() - started

    def wrap(self, stage_of: Callable[..., str], function: Callable[..., Any]) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.timing(stage_of(*args, **kwargs)):
                return function(*args, **kwargs)

        return timed


def replay(path: Path, repeats: int) -> None:
    captured = pickle.loads(path.read_bytes())
    tasks, frames = captured["tasks"], [pickle.loads(blob) for blob in captured["frames"]]
    records = sum(map(ledger_module.record_count, frames))
    print(f"{len(frames)} frames, {tasks:,} tasks, {records / tasks:.1f} records a task")
    journals: list[float] = []
    totals: list[float] = []
    stage_runs: list[Counter[str]] = []
    sizes: list[int] = []
    for _ in range(repeats):
        journal, total, stages, size = _replay_once(frames)
        journals.append(journal)
        totals.append(total)
        stage_runs.append(stages)
        sizes.append(size)

    def per_task(values: list[float]) -> str:
        return (
            f"median {statistics.median(values) / tasks * 1e6:.1f} us/task "
            f"({min(values) / tasks * 1e6:.1f}-{max(values) / tasks * 1e6:.1f}, {repeats} replays)"
        )

    print(f"writer thread (journal, in the scheduler's process): {per_task(journals)}")
    print(f"indexer: {per_task(totals)}; file {statistics.median(sizes) / tasks:,.0f} B/task")
    for stage in sorted(stage_runs[0], key=stage_runs[0].__getitem__, reverse=True):
        values = [run[stage] for run in stage_runs]
        print(f"  {statistics.median(values) / tasks * 1e6:6.2f} us/task  {stage}")


def _replay_once(frames: list[list[Any]]) -> tuple[float, float, Counter[str], int]:
    """Append every frame to a fresh journal and index it into a fresh file, each as the
    writer thread and the indexer would; CPU seconds of each, the indexer's per stage, and
    the file's size."""
    stages = _Stages()
    patched = {
        "_insert_rows": stages.wrap(
            lambda conn, table, *rest: f"insert {table}", ledger_module._insert_rows
        ),
        "pack_block": stages.wrap(lambda *_: "pack and compress blocks", ledger_module.pack_block),
    }
    originals = {name: getattr(ledger_module, name) for name in patched}
    tally_add = ledger_module.RunTally.add_scheduler_transitions
    tally_write = ledger_module.RunTally.write
    ledger_module.RunTally.add_scheduler_transitions = stages.wrap(  # type: ignore[method-assign]
        lambda *_: "tally", tally_add
    )
    ledger_module.RunTally.write = stages.wrap(  # type: ignore[method-assign]
        lambda *_: "summary at run end", tally_write
    )
    for name, function in patched.items():
        setattr(ledger_module, name, function)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_write_all(frames, stages)))
    try:
        thread.start()
        thread.join()
    finally:
        for name, function in originals.items():
            setattr(ledger_module, name, function)
        ledger_module.RunTally.add_scheduler_transitions = tally_add  # type: ignore[method-assign]
        ledger_module.RunTally.write = tally_write  # type: ignore[method-assign]
    journal, total, size = result[0]
    stages.seconds["rest (reading the journal, grouping, Python)"] = total - sum(
        stages.seconds.values()
    )
    return journal, total, stages.seconds, size


def _write_all(frames: list[list[Any]], stages: _Stages) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        ledger = ledger_module.Ledger(path)
        run_id = ledger.start_run({"where": "replay"})
        ledger.close()  # the file, its schema and a run, and no journal left
        with ledger._reading() as conn:
            generation = journal_module.stored_position(conn)[0] + 1
        journal = journal_module.JournalWriter(path, generation)
        started = time.thread_time()
        for items in frames:
            journal.append([(item[0], run_id, *item[2:]) for item in items])
        journaled = time.thread_time() - started
        journal.close()
        indexer = indexer_module.Indexer(path)
        commit = indexer.conn.execute

        def timed(sql: str, *args: Any) -> Any:
            if sql in ("BEGIN", "COMMIT"):
                with stages.timing(sql.lower()):
                    return commit(sql, *args)
            return commit(sql, *args)

        started = time.thread_time()
        indexer.conn = _Timed(indexer.conn, timed)
        gc.disable()  # as in the indexer's process
        try:
            indexer.finish()
        finally:
            gc.enable()
        total = time.thread_time() - started
        size = sum(p.stat().st_size for p in Path(directory).iterdir())
        return journaled, total, size


class _Timed:
    """A connection whose ``execute`` goes through ``execute`` (to time BEGIN and COMMIT)."""

    def __init__(self, conn: Any, execute: Callable[..., Any]) -> None:
        self._conn = conn
        self.execute = execute

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, help="run a workload and keep its batches here")
    parser.add_argument("--replay", type=Path, help="replay the batches kept here")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="tree")
    parser.add_argument("--size", type=int, default=4_096)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.capture:
        capture(args.capture, args.workload, args.size, args.rounds)
    if args.replay:
        replay(args.replay, args.repeats)


if __name__ == "__main__":
    main()
