"""The journal and the indexer process: flushes wait for the indexer, a query during its lag sees
everything, a killed scheduler's journal is indexed at the next open, and indexed files go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from storied import Client, LocalCluster
from storied.record import Ledger
from storied.record.journal import JournalReader, journal_files
from storied.record.ledger import _TRANSITIONS as SHIPPED
from storied.record.ledger import FOLLOWED
from tests.ledger.test_durable import inc
from tests.ledger.test_integrity import start_scheduler, stop, wait_for


def indexer_of(pid: int, ledger: Path) -> psutil.Process:
    """The indexer process that process ``pid`` started for ``ledger``."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = [
            child
            for child in psutil.Process(pid).children()
            if _is_indexer(child) and str(ledger) in child.cmdline()
        ]
        return bool(found)

    wait_for(started, f"the indexer of {ledger}")
    return found[0]


def _is_indexer(process: psutil.Process) -> bool:
    return any("storied.record.indexer" in part for part in process.cmdline())


def journaled(path: Path, text: str) -> bool:
    """Whether the journal beside ``path`` holds ``text`` (msgpack keeps strings as they are)."""
    return any(text.encode() in journal.read_bytes() for journal in journal_files(path).values())


def journaled_outcomes(path: Path) -> set[tuple[str, str]]:
    """``(key, finish)`` of the transitions in the journal that both the scheduler (read from
    its log) and a worker (shipped) made."""
    items = JournalReader(path, (0, 0)).read(1 << 30)
    ours = {(entry[1], entry[3]) for item in items if item[0] == FOLLOWED for entry in item[2]}
    shipped = {
        (key, finish)
        for item in items
        if item[0] == SHIPPED
        for key, finish in zip(item[2][1], item[2][3], strict=True)
    }
    return ours & shipped


def test_flush_waits_for_the_indexer_and_a_journal_flush_does_not(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    indexer = indexer_of(os.getpid(), path)
    indexer.suspend()
    try:
        for i in range(3):
            ledger.put_execution(run_id, f"t-{i}", "tcp://w:1", 1, 1.0, 2.0, "memory")
        with pytest.raises(TimeoutError, match="did not flush"):
            ledger.flush(timeout=0.5)
        ledger.flush(timeout=10, indexed=False)  # in the journal: safe, not yet readable
        assert journaled(path, "t-2")
        assert ledger.executions() == [] and ledger.unindexed_bytes() > 0
    finally:
        indexer.resume()
    ledger.flush()
    assert [e["key"] for e in ledger.executions()] == ["t-0", "t-1", "t-2"]
    assert ledger.unindexed_bytes() == 0
    ledger.close()
    assert not indexer.is_running() and journal_files(path) == {}


def test_a_story_asked_while_the_indexer_lags_has_everything(tmp_path):
    """The workers' transitions live only in the ledger: a story asked while the indexer is
    held back waits for it, then tells them too."""
    path = tmp_path / "ledger.db"
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        indexer = indexer_of(os.getpid(), path)
        indexer.suspend()
        resumed = threading.Timer(1.0, indexer.resume)
        try:
            futures = client.map(inc, range(20), pure=False)
            client.gather(futures)
            resumed.start()
            story = client.story(futures[-1].key)
        finally:
            resumed.cancel()
            indexer.resume()
        places = {where for where, *_ in story}  # Dask's (where, key, start, finish, ...)
        assert "scheduler" in places and len(places) == 2  # and the worker's, from the ledger
        assert len(Ledger(path).story(futures[0].key)) == len(client.story(futures[0].key))


def test_a_killed_schedulers_journal_is_indexed_at_the_next_open(tmp_path, caplog):
    """Scheduler and indexer SIGKILLed with records in the journal (the indexer held back):
    readers say records are pending, and the next writer indexes them, all but a torn frame."""
    path = tmp_path / "ledger.db"
    scheduler, address = start_scheduler(path, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen(
        [sys.executable, "-m", "storied", "worker", address],
        env={**os.environ, "STORIED_AUTH_TOKEN": ""},
        stderr=subprocess.DEVNULL,
    )
    try:
        indexer = indexer_of(scheduler.pid, path)
        indexer.suspend()
        with Client(address, timeout=20) as client:
            client.wait_for_workers(1, timeout=20)
            keys = [f"kept-{i}" for i in range(30)]
            client.gather([client.submit(inc, i, key=key) for i, key in enumerate(keys)])
            wait_for(
                lambda: journaled_outcomes(path) >= {(key, "memory") for key in keys},
                "the tasks' transitions, the scheduler's and the worker's, in the journal",
            )
            scheduler.send_signal(signal.SIGKILL)
            scheduler.wait(10)
        indexer.kill()
    finally:
        for process in (worker, scheduler):
            stop(process)
    assert Ledger(path).story(keys[0]) == []
    noted = subprocess.run(
        [sys.executable, "-m", "storied", "story", keys[0], "--ledger", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "bytes of records beside" in noted.stderr and "not indexed yet" in noted.stderr
    last = journal_files(path)[max(journal_files(path))]
    with open(last, "ab") as journal:  # a frame the writer did not finish
        journal.write((1_000).to_bytes(4, "little") + b"half a frame")

    reopened = Ledger(path)
    with caplog.at_level("WARNING", logger="storied.record"):
        reopened.start_run({})
    reopened.close()
    assert "did not finish writing" in caplog.text
    assert journal_files(path) == {}
    ledger = Ledger(path)
    for key in keys:
        finishes = {(rec.where == "scheduler", rec.finish) for rec in ledger.story(key)}
        assert {(True, "memory"), (False, "memory")} <= finishes, key
    run = ledger.runs()[0]
    assert run["ended"] is None and ledger.task_counts(run["run_id"]) is None  # it crashed


def test_journal_files_rotate_and_go_once_indexed(tmp_path, monkeypatch):
    monkeypatch.setattr("storied.record.journal.ROTATE_BYTES", 300)
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    run_id = ledger.start_run({})
    generations: set[int] = set()
    for i in range(40):
        ledger.put_execution(run_id, f"t-{i}", "tcp://w:1", 1, 1.0, 2.0, "memory")
        ledger.flush(indexed=i % 10 == 9)
        generations |= set(journal_files(path))
    assert len(generations) > 5  # a frame of about 60 bytes each: a file every few
    assert len(journal_files(path)) <= 2  # indexed files were removed
    ledger.close()
    assert journal_files(path) == {}
    assert [e["key"] for e in Ledger(path).executions()] == [f"t-{i}" for i in range(40)]
