"""Closing a scheduler with a ledger: the last writes (the run summary among them) happen off
the event loop, which goes on answering meanwhile, and are complete when ``close`` returns."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from storied.record.ledger import Ledger
from storied.scheduler.server import Scheduler

TASKS = 20_000
#: how long the ledger's file stays locked by another connection while the scheduler closes
LOCKED_FOR = 1.5


async def close_watching_the_loop(scheduler: Scheduler) -> tuple[float, float]:
    """Close ``scheduler``; return how long that took and the longest the loop was held."""
    loop = asyncio.get_running_loop()
    closing = asyncio.ensure_future(scheduler.close())
    began = last = loop.time()
    longest = 0.0
    deadline = began + 30
    while not closing.done():
        assert loop.time() < deadline, "close did not finish within 30 s"
        await asyncio.sleep(0.005)
        now = loop.time()
        longest, last = max(longest, now - last), now
    await closing
    return loop.time() - began, longest


def test_close_writes_the_run_summary_while_the_loop_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"

    async def main() -> tuple[int, float, float]:
        scheduler = await Scheduler(ledger=path).start()
        record = scheduler.record
        for i in range(TASKS):  # as the state machine records a task's life
            key = f"inc-{i}"
            record.transition(key, "released", "waiting", {}, "graph")
            record.transition(key, "waiting", "processing", {}, "graph", "tcp://w")
            record.transition(key, "processing", "memory", {}, "done", "tcp://w")
        record.flush()
        # another process holds the file for a while: the last writes wait for it
        locker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")
        unlock = threading.Timer(LOCKED_FOR, locker.execute, ("ROLLBACK",))
        unlock.start()
        try:
            took, longest = await close_watching_the_loop(scheduler)
        finally:
            unlock.join()
            locker.close()
        assert scheduler.status == "closed"
        return record.run_id, took, longest  # type: ignore[return-value]

    started = time.monotonic()
    run_id, took, longest = asyncio.run(main())
    assert took >= LOCKED_FOR * 0.8, "the close did not wait for the ledger: nothing measured"
    assert longest < took / 3, f"the loop was held {longest:.2f} s of a {took:.2f} s close"
    assert time.monotonic() - started < 30
    ledger = Ledger(path)
    try:
        [run] = ledger.runs()
        assert run["run_id"] == run_id and run["ended"] is not None
        counts = ledger.task_counts(run_id)
        assert counts is not None, "the run ended without its summary"
        assert ("tasks", "", "", TASKS) in counts
        assert ("prefix-states", "inc", "memory", TASKS) in counts
    finally:
        ledger.close()
