"""How fast is a story lookup in a big ledger file?

Builds a ledger of ``--n`` transitions in /tmp through the normal write path (Ledger's queue and
writer thread), then times ``Ledger.story`` for random keys and stimulus ids, each call opening
its own read connection as the CLI does. Building 10,000,000 transitions takes several minutes.
With ``--shipped N``, a worker also ships N transitions of each task, packed as workers ship
them (``storied.record.shipments``), so lookups read shipped blocks beside the scheduler's.

    .venv/bin/python bench/ledger_story.py --n 10000000 [--shipped 2]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

from storied.record.ledger import Ledger
from storied.record.shipments import checked_shipment, pack_shipment
from storied.record.transitions import TransitionLog

# The life of one task: (start, finish, recommends the next task?)
LIFE = [
    ("released", "waiting", False),
    ("waiting", "processing", False),
    ("processing", "memory", True),
    ("memory", "released", False),
    ("released", "forgotten", False),
]


#: What a worker ships of one task, at most: (start, finish) of its transitions
WORKER_LIFE = [("waiting", "ready"), ("ready", "executing"), ("executing", "memory")]
SHIPMENT_ROWS = 500


def build(path: Path, n: int, shipped: int) -> float:
    ledger = Ledger(path)
    run_id = ledger.start_run({"bench": "ledger_story", "n": n})
    seqs = itertools.count(ledger.first_seq(run_id))
    log = TransitionLog(100_000, seq=seqs)
    ledger.follow(run_id, log)
    rows: list[tuple[str, str, str, dict[str, str], str, float]] = []
    started = time.perf_counter()
    timestamp = time.time()
    for number in range(n):
        task, step = divmod(number, len(LIFE))
        start, finish, recommends = LIFE[step]
        key = f"task-{task:09d}"
        recommendations = {f"task-{task + 1:09d}": "waiting"} if recommends else {}
        log.append(key, start, finish, recommendations, f"stim-{task}-{step}", timestamp=timestamp)
        if step == 2:  # the worker's part of the task, shipped in bulk as a worker does
            rows += [
                (key, before, after, {}, f"stim-{task}-2", timestamp)
                for before, after in WORKER_LIFE[:shipped]
            ]
            if len(rows) >= SHIPMENT_ROWS:
                shipment = checked_shipment(
                    pack_shipment([list(c) for c in zip(*rows, strict=True)])
                )
                first_seq = next(seqs)
                for _ in range(shipment.count - 1):
                    next(seqs)
                ledger.put_shipment(run_id, "tcp://w:1", first_seq, shipment)
                rows = []
        if number % 50_000 == 49_999:  # this loop logs far faster than a scheduler would
            ledger.flush(timeout=600)
        if number % 1_000_000 == 999_999:
            print(f"  {number + 1:>12,} written", flush=True)
    ledger.close()
    assert ledger.dropped == 0
    return time.perf_counter() - started


def time_lookups(ledger: Ledger, names: list[str]) -> list[float]:
    timings = []
    for name in names:
        started = time.perf_counter()
        story = ledger.story(name)
        timings.append((time.perf_counter() - started) * 1e3)
        assert story, name
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="transitions to write")
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument(
        "--shipped",
        type=int,
        default=0,
        choices=range(len(WORKER_LIFE) + 1),
        help="transitions a worker ships per task",
    )
    parser.add_argument("--path", type=Path, help="ledger file (default: a new one in /tmp)")
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp(prefix="storied-bench-")) / "ledger.db"
    if not path.exists():
        print(f"building {args.n:,} transitions in {path}")
        seconds = build(path, args.n, args.shipped)
        print(f"built in {seconds:.1f} s ({args.n / seconds:,.0f} transitions/s)")
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20
    print(f"file size: {size:,.0f} MiB")
    tasks = args.n // len(LIFE)
    ledger = Ledger(path)
    picks = [random.randrange(1, tasks) for _ in range(args.lookups)]
    for label, names in (
        ("key", [f"task-{task:09d}" for task in picks]),
        ("stimulus id", [f"stim-{task}-2" for task in picks]),
    ):
        timings = sorted(time_lookups(ledger, names))
        print(
            f"story by {label}: median {statistics.median(timings):.2f} ms, "
            f"p99 {timings[int(len(timings) * 0.99) - 1]:.2f} ms, max {timings[-1]:.2f} ms "
            f"({len(timings)} lookups)"
        )


if __name__ == "__main__":
    main()
