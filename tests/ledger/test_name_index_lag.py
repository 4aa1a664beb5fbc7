"""The name index is written every ``index_interval`` seconds, not with every batch: what it does
not cover yet is still found, by readers and after a writer dies."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from storied.record.ledger import (
    INDEXED_THROUGH,
    Ledger,
    highest_block_id,
    indexed_through,
    names_query,
)
from tests.record.test_ledger import wait_until, write_story

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "history.db"


def index_state(path: Path, name: str) -> tuple[int | None, int, list[int]]:
    """The highest block id the index covers, the highest block id, and the blocks it has
    under ``name``."""
    with closing(sqlite3.connect(path)) as conn:
        found = conn.execute(
            "SELECT rowid FROM block_names WHERE block_names MATCH ?", (names_query([name]),)
        )
        return indexed_through(conn), highest_block_id(conn), [row for (row,) in found]


def test_committed_blocks_wait_for_the_index_and_stories_still_find_them(path):
    ledger = Ledger(path, flush_interval=0.01, index_interval=3600)
    run_id = ledger.start_run({})
    records = write_story(ledger, run_id, ledger.first_seq(run_id))
    wait_until(lambda: ledger.written >= len(records))
    through, highest, indexed = index_state(path, "x")
    assert highest > through and indexed == []  # committed, not in the index yet
    assert ledger.story("x") == Ledger(path).story("x") == records
    assert ledger.story("graph") == [records[0], records[2]]

    ledger.flush()  # committed already: a flush does not wait for the index
    assert index_state(path, "x")[2] == []
    ledger.flush(indexed=True)  # unless asked to
    through, highest, indexed = index_state(path, "x")
    assert through == highest and indexed == [highest]
    assert Ledger(path).story("x") == records
    ledger.close()


def test_a_close_leaves_nothing_out_of_the_index(path):
    ledger = Ledger(path, flush_interval=0.01, index_interval=3600)
    run_id = ledger.start_run({})
    records = write_story(ledger, run_id, ledger.first_seq(run_id))
    wait_until(lambda: ledger.written >= len(records))
    ledger.close()
    through, highest, indexed = index_state(path, "x")
    assert through == highest and indexed == [highest]


def test_the_index_takes_committed_blocks_every_index_interval(path):
    ledger = Ledger(path, flush_interval=0.01, index_interval=0.2)
    run_id = ledger.start_run({})
    records = write_story(ledger, run_id, ledger.first_seq(run_id))
    wait_until(lambda: ledger.written >= len(records))
    ledger.put_execution(run_id, "x", "tcp://w:1", 1, 1.0, 2.0, "memory")  # another batch
    wait_until(lambda: index_state(path, "x")[2] != [], timeout=10)
    through, highest, indexed = index_state(path, "x")
    assert through == highest and indexed == [highest]
    ledger.close()


def test_a_writer_that_dies_leaves_unindexed_blocks_to_readers_and_the_next_writer(path):
    script = textwrap.dedent(
        f"""
        import os, time
        from storied.record.ledger import Ledger
        from tests.record.test_ledger import wait_until, write_story
        ledger = Ledger({str(path)!r}, flush_interval=0.01, index_interval=3600)
        run_id = ledger.start_run({{}})
        write_story(ledger, run_id, ledger.first_seq(run_id))
        wait_until(lambda: ledger.written >= 4)
        os._exit(0)  # no close: the index never took the block
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)
    through, highest, indexed = index_state(path, "x")
    assert highest > through and indexed == []
    story = Ledger(path).story("x")
    assert [(r.key, r.finish) for r in story] == [
        ("x", "waiting"),
        ("x", "processing"),
        ("y", "waiting"),
        ("x", "memory"),
    ]

    next_writer = Ledger(path)
    next_writer.start_run({})  # indexes what the dead one left
    next_writer.close()
    through, highest, indexed = index_state(path, "x")
    assert through == highest and indexed == [highest]
    assert Ledger(path).story("x") == story


def test_retention_indexes_pending_names_before_it_takes_blocks_out(path):
    """A block leaves the contentless index by being indexed again as a deletion: pruning
    one whose names are still pending would corrupt the index, or leave them in it behind."""
    ledger = Ledger(path, flush_interval=0.01, index_interval=3600, retain=3600, prune_every=0)
    run_id = ledger.start_run({})
    old = write_story(ledger, run_id, ledger.first_seq(run_id), timestamp=time.time() - 7200)
    wait_until(lambda: ledger.written >= len(old))
    wait_until(lambda: index_state(path, "x")[1] == 0)  # pruned, the writer still running
    ledger.close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO block_names (block_names, rank) VALUES ('integrity-check', 0)")
        assert conn.execute("SELECT count(*) FROM block_names").fetchone() == (0,)
        assert conn.execute(
            "SELECT value FROM meta WHERE name = ?", (INDEXED_THROUGH,)
        ).fetchone() == ("1",)
    assert Ledger(path).story("x") == []
