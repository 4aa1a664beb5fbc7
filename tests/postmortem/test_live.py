"""Failures on the live record (``client.story``) and, once the cluster is gone, in the ledger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine.helpers import poll

from storied import Client, LocalCluster
from storied.record import Ledger


def fragile(x: int, marker: str) -> int:
    """Fails the first time (the marker file remembers), then works."""
    if not os.path.exists(marker):
        Path(marker).touch()
        raise ConnectionError("first try fails")
    return x


def broken(x: int) -> int:
    raise KeyError(f"no entry {x}")


def add(x: int, y: int) -> int:
    return x + y


def stage(client: Client, tmp_path: Path) -> tuple[str, str, str]:
    """A task retried once, a task that errs, and a dependent of it; their keys."""
    retried = client.submit(fragile, 1, str(tmp_path / "marker"), retries=1, key="fragile-1")
    root = client.submit(broken, 7, key="broken-7")
    dependent = client.submit(add, root, retried, key="add-1")
    assert retried.result(timeout=10) == 1
    assert isinstance(dependent.exception(timeout=10), KeyError)
    return retried.key, root.key, dependent.key


def failures_in(story: list) -> list[dict]:
    return [entry.failure for entry in story if entry.failure is not None]


@pytest.mark.parametrize("durable", [False, True])
def test_client_story_carries_the_failure_on_the_transition_it_caused(durable, tmp_path):
    ledger = tmp_path / "live.db" if durable else None
    with (
        LocalCluster(n_workers=1, processes=False, ledger=ledger) as cluster,
        Client(cluster) as client,
    ):
        retried, root, dependent = stage(client, tmp_path)
        story = client.story(retried)
        (failure,) = failures_in(story)
        (caused,) = [entry for entry in story if entry.failure is not None]
        assert (caused.where, caused.start, caused.finish) == (
            "scheduler",
            "processing",
            "released",
        )
        assert failure["attempt"] == 1 and failure["outcome"] == "retried"
        assert failure["exception_type"] == "ConnectionError"
        assert "in fragile" in failure["traceback"] and failure["stop"] >= failure["start"]
        (root_failure,) = failures_in(client.story(root))
        assert (root_failure["outcome"], root_failure["message"]) == ("erred", "'no entry 7'")
        dependent_failures = [
            f for f in failures_in(client.story(dependent)) if f["key"] == dependent
        ]
        assert [f["blame"] for f in dependent_failures] == [root]
        assert {entry.run_id for entry in story} == ({1} if durable else {None})


def test_the_ledger_answers_why_after_the_cluster_is_gone(tmp_path):
    path = tmp_path / "gone.db"
    with (
        LocalCluster(n_workers=1, processes=False, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        retried, root, dependent = stage(client, tmp_path)
        live_exception = repr(client.submit(broken, 7, key="broken-7").exception(timeout=10))

    ledger = Ledger(path)
    failure = ledger.failure(root)
    assert failure is not None and failure["run_id"] == 1
    assert repr(KeyError(failure["message"].strip("'"))) == live_exception
    assert failure["traceback"].rstrip().endswith("KeyError: 'no entry 7'")
    assert ledger.failure(dependent)["blame"] == root
    assert ledger.failure(root, run=2) is None and ledger.failure("never-ran") is None
    attempts = [f["attempt"] for f in ledger.failures([retried])]
    assert attempts == [1]

    (failed_run,) = [e for e in ledger.executions() if e["key"] == retried and e["attempt"]]
    assert failed_run["outcome"] == "erred" and failed_run["exception_type"] == "ConnectionError"
    rows = {row["key"]: row for row in ledger.tasks(failed=True)}
    assert set(rows) == {retried, root, dependent}
    assert (rows[retried]["state"], rows[retried]["executions"]) == ("memory", 2)
    assert rows[dependent]["state"] == "erred" and rows[dependent]["blame"] == root
    assert [row["key"] for row in ledger.tasks(prefix="broken", state="erred")] == [root]
    assert ledger.tasks(run_id=2) == []
    (summary,) = ledger.run_summaries()
    assert (summary["failures"], summary["erred"], summary["retried"]) == (2, 2, 1)


def test_a_failure_s_traceback_text_starts_in_the_task_not_in_storied(client):
    def fails_here() -> None:
        raise LookupError("from the task")

    future = client.submit(fails_here, pure=False)
    with pytest.raises(LookupError):
        future.result(timeout=10)
    traceback = poll(
        lambda: next(
            (
                msg["traceback"]
                for _, msg in client.get_events("erred")
                if msg.get("key") == future.key
            ),
            None,
        )
    )
    assert "fails_here" in traceback
    assert "storied/worker/server.py" not in traceback
