"""The run tally: each task's outcome on the scheduler, summed up while the ledger writes."""

from __future__ import annotations

import random
import sqlite3

from storied.record.ledger import create_or_check_schema
from storied.record.summary import LET_GO, RunTally

STATES = ["released", "waiting", "processing", "memory", "erred", "forgotten", "no-worker"]


def outcomes(tally: RunTally) -> dict[str, str | None]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_or_check_schema(conn)
    tally.write(conn, 1)
    return dict(conn.execute("SELECT key, state FROM run_tasks WHERE run_id = 1"))


def expected(transitions: list[tuple[str, str]]) -> dict[str, str]:
    """The last state other than released or forgotten; that one if a key had no other."""
    last: dict[str, str] = {}
    kept: dict[str, str] = {}
    for key, finish in transitions:
        last[key] = finish
        if finish not in LET_GO:
            kept[key] = finish
    return {key: kept.get(key, state) for key, state in last.items()}


def test_a_task_keeps_its_last_held_state_else_its_last():
    tally = RunTally()
    story = [
        ("done", "waiting"),
        ("done", "memory"),
        ("done", "released"),
        ("done", "forgotten"),
        ("dropped", "released"),
        ("dropped", "forgotten"),
        ("rerun", "memory"),
        ("rerun", "released"),
        ("rerun", "erred"),
    ]
    tally.add_scheduler_transitions(*zip(*story, strict=True))
    assert outcomes(tally) == {"done": "memory", "dropped": "forgotten", "rerun": "erred"}


def test_batches_in_any_split_sum_up_as_one_pass():
    rng = random.Random(7)
    transitions = [(f"k{rng.randrange(40)}", rng.choice(STATES)) for _ in range(2_000)]
    tally = RunTally()
    low = 0
    while low < len(transitions):
        high = low + rng.randrange(1, 300)
        tally.add_scheduler_transitions(*zip(*transitions[low:high], strict=True))
        low = high
    assert outcomes(tally) == expected(transitions)
    assert len(tally) >= len(expected(transitions))
