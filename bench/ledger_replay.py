"""What the ledger's writer spends, per stage, replayed from a captured run on one thread.

A cluster measurement of the ledger's cost swings with whatever else the machine runs. This
captures what the writer process was handed while a workload ran (every batch: queued items,
the transitions read from the scheduler's log, executions), then writes the same batches into
a fresh file, on one thread, with the writer process's code, and prints its CPU per task split
by stage: building blocks (packing and compressing), each table's inserts, the run's
summary, and the rest (commits among it). Replays of one capture compare versions of the
writer with nothing else changed.

    .venv/bin/python bench/ledger_replay.py --capture /tmp/tree.pickle --size 4096 --rounds 4
    .venv/bin/python bench/ledger_replay.py --replay /tmp/tree.pickle --repeats 5
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import cloudpickle
import ledger_ab
from ledger_ab import WORKLOADS

from storied import Client, LocalCluster
from storied.record import ledger as ledger_module
from storied.record.writer import WriterProcess, _BatchWriter, _LogKeeper

cloudpickle.register_pickle_by_value(ledger_ab)  # workers cannot import bench/


def capture(path: Path, workload: str, size: int, rounds: int) -> None:
    """Run ``workload`` ``rounds`` times on a cluster with a ledger, keeping every batch handed
    to the writer process (pickled as it was handed over) and the tasks run."""
    batches: list[bytes] = []
    write = WriterProcess.write

    def keeping(
        writer: WriterProcess, batch: Any, transitions: Any, executions: Any, index_now: bool
    ) -> Any:
        kept = (batch, transitions, executions, index_now)
        batches.append(pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL))
        return write(writer, batch, transitions, executions, index_now)

    WriterProcess.write = keeping  # type: ignore[method-assign]
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
        WriterProcess.write = write  # type: ignore[method-assign]
    path.write_bytes(pickle.dumps({"tasks": tasks, "batches": batches}))
    print(f"captured {len(batches)} batches of {tasks:,} tasks into {path}")


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
    tasks, batches = captured["tasks"], [pickle.loads(blob) for blob in captured["batches"]]
    records = sum(
        ledger_module.batch_records(batch, followed, executions)
        for batch, followed, executions, _ in batches
    )
    print(f"{len(batches)} batches, {tasks:,} tasks, {records / tasks:.1f} records a task")
    totals: list[float] = []
    stage_runs: list[Counter[str]] = []
    sizes: list[int] = []
    for _ in range(repeats):
        total, stages, size = _replay_once(batches)
        totals.append(total)
        stage_runs.append(stages)
        sizes.append(size)
    print(
        f"writer CPU: median {statistics.median(totals) / tasks * 1e6:.1f} us/task "
        f"({min(totals) / tasks * 1e6:.1f}-{max(totals) / tasks * 1e6:.1f}, {repeats} replays); "
        f"file {statistics.median(sizes) / tasks:,.0f} B/task"
    )
    for stage in sorted(stage_runs[0], key=stage_runs[0].__getitem__, reverse=True):
        values = [run[stage] for run in stage_runs]
        print(f"  {statistics.median(values) / tasks * 1e6:6.2f} us/task  {stage}")


def _replay_once(batches: list[tuple[Any, Any, Any, bool]]) -> tuple[float, Counter[str], int]:
    """Write every batch into a fresh file as the writer would; CPU seconds in all, per
    stage, and the file's size."""
    stages = _Stages()
    patched = {
        "_insert_rows": stages.wrap(
            lambda conn, table, *rest: f"insert {table}", ledger_module._insert_rows
        ),
        "pack_block": stages.wrap(lambda *_: "pack and compress blocks", ledger_module.pack_block),
        "_sum_up": stages.wrap(lambda *_: "summary at run end", ledger_module._sum_up),
    }
    originals = {name: getattr(ledger_module, name) for name in patched}
    for name, function in patched.items():
        setattr(ledger_module, name, function)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(_write_all(batches, stages)))
    try:
        thread.start()
        thread.join()
    finally:
        for name, function in originals.items():
            setattr(ledger_module, name, function)
    total, size = result[0]
    stages.seconds["rest (grouping, Python, commits)"] = total - sum(stages.seconds.values())
    return total, stages.seconds, size


def _write_all(batches: list[tuple[Any, Any, Any, bool]], stages: _Stages) -> tuple[float, int]:
    """Hand every batch to the writer process's code on this thread, into a fresh file."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ledger.db"
        ledger = ledger_module.Ledger(path)
        run_id = ledger.start_run({"where": "replay"})
        ledger.close()  # the file and its run, written the usual way
        writer = _BatchWriter(path, ledger.index_interval, None, 60.0)
        logs = _LogKeeper()
        # the writer process indexes names every index_interval: every that many flush
        # intervals here, as the batches came
        every = max(round(ledger.index_interval / ledger.flush_interval), 1)
        started = time.thread_time()
        for number, (batch, followed, executions, _) in enumerate(batches, 1):
            batch = [_with_run(item, run_id) for item in batch]
            followed = [(run_id, entries, recs) for _, entries, recs in followed]
            executions = {run_id: [*chain.from_iterable(executions.values())]} if executions else {}
            due = number % every == 0 or number == len(batches)
            writer.write(batch, followed, executions, due, logs)
        total = time.thread_time() - started
        writer.conn.close()
        size = sum(p.stat().st_size for p in Path(directory).iterdir())
        return total, size


def _with_run(item: tuple[Any, ...], run_id: int) -> tuple[Any, ...]:
    """A queued item, moved to the replay's run."""
    return (item[0], run_id, *item[2:])


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
