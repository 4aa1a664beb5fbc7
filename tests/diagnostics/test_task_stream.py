"""``get_task_stream``: Dask's window over the record's executions, the context manager on a
real cluster, and the same work's task stream on dask.distributed, shape for shape."""

from __future__ import annotations

import time
from typing import Any

import pytest

from storied import Client, get_task_stream
from storied.diagnostics.task_stream import select, task_stream_entry
from storied.record import Record
from tests.engine.helpers import fail, inc


def execution(key: str, stop: float, outcome: str = "memory") -> dict[str, Any]:
    return {
        "key": key,
        "worker": "tcp://127.0.0.1:1",
        "thread": 7,
        "start": stop - 0.5,
        "stop": stop,
        "outcome": outcome,
    }


def test_an_execution_in_dasks_shape() -> None:
    assert task_stream_entry(execution("('sum-aggregate-0a1b2c3d', 3)", 10.0, "erred")) == {
        "key": "('sum-aggregate-0a1b2c3d', 3)",
        "name": "sum-aggregate",
        "worker": "tcp://127.0.0.1:1",
        "thread": 7,
        "status": "error",
        "startstops": [{"action": "compute", "start": 9.5, "stop": 10.0}],
    }


def test_the_window_by_time_and_count_as_dask() -> None:
    executions = [execution(f"t-{i}", float(i)) for i in (3, 1, 4, 2, 5)]  # out of order

    def keys(**window: Any) -> list[str]:
        return [entry["key"] for entry in select(executions, **window)]

    assert keys() == ["t-1", "t-2", "t-3", "t-4", "t-5"]
    assert keys(count=2) == ["t-4", "t-5"]
    assert keys(start=2.5) == ["t-3", "t-4", "t-5"]
    assert keys(start=2.5, count=1) == ["t-3"]
    assert keys(stop=3.0) == ["t-1", "t-2"]
    assert keys(stop=3.0, count=1) == ["t-2"]
    assert keys(start=2.0, stop=4.0) == ["t-2", "t-3"]
    assert keys(count=0) == []
    recent = [execution("now", time.time()), execution("old", time.time() - 120)]
    assert [entry["key"] for entry in select(recent, start="60s")] == ["now"]


def test_a_bad_window_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="start must be a time"):
        select([], start=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="count must be a non-negative int"):
        select([], count=-1)


def test_a_bokeh_plot_is_refused_with_what_to_do_instead(client: Client) -> None:
    with pytest.raises(ValueError, match="performance_report"):
        client.get_task_stream(plot=True)
    with pytest.raises(ValueError, match="performance_report"):
        get_task_stream(client, plot="save")


def test_the_record_hands_out_executions_after_a_cursor() -> None:
    record = Record("scheduler", execution_log_length=3)
    assert record.executions_recorded == 0
    for i in range(2):
        record.execution(f"a-{i}", "w", 0, 0.0, 1.0, "memory")
    cursor = record.executions_recorded
    assert record.executions(since=cursor) == []
    for i in range(2):
        record.execution(f"b-{i}", "w", 0, 0.0, 1.0, "memory")
    assert [e["key"] for e in record.executions(since=cursor)] == ["b-0", "b-1"]
    for i in range(3):
        record.execution(f"c-{i}", "w", 0, 0.0, 1.0, "memory")
    # only three are held: what is newer than the cursor and still held
    assert [e["key"] for e in record.executions(since=cursor)] == ["c-0", "c-1", "c-2"]


def test_the_context_manager_holds_what_ran_inside_the_block(client: Client) -> None:
    client.gather(client.map(inc, range(500, 505)))  # before: left out
    with get_task_stream(client) as ts:
        client.gather(client.map(inc, range(510, 516)))
        with pytest.raises(ZeroDivisionError):
            client.submit(fail, 9).result()
    assert len(ts.data) == 7
    assert sorted(entry["status"] for entry in ts.data) == ["OK"] * 6 + ["error"]
    assert {entry["name"] for entry in ts.data} == {"inc", "fail"}
    workers = set(client.scheduler_info()["workers"])
    for entry in ts.data:
        assert entry["worker"] in workers
        (span,) = entry["startstops"]
        assert span["action"] == "compute" and span["start"] <= span["stop"]
    newest = client.get_task_stream(count=7)
    assert sorted(e["key"] for e in newest) == sorted(e["key"] for e in ts.data)


def test_the_default_client_and_the_method_agree(client: Client) -> None:
    with get_task_stream() as ts:
        client.gather(client.map(inc, range(600, 603)))
    assert len(ts.data) == 3
    since = min(e["startstops"][0]["stop"] for e in ts.data)
    assert {e["key"] for e in client.get_task_stream(start=since)} >= {e["key"] for e in ts.data}


def work(client: Any, fail_function: Any) -> None:
    client.gather(client.map(inc, range(3)))
    with pytest.raises(ZeroDivisionError):
        client.submit(fail_function, 1).result()


def test_the_same_work_on_dask_distributed_gives_the_same_shape(
    client: Client, dask_client: Any
) -> None:
    """Dask's records carry more (``nbytes``, ``type``, ``stimulus_id``...); the keys a task
    stream reader uses are in both, with the same kinds of values."""
    import distributed

    with get_task_stream(client) as ours:
        work(client, fail)
    with distributed.get_task_stream(dask_client) as theirs:
        work(dask_client, fail)
    assert len(ours.data) == len(theirs.data) == 4
    for entries in (ours.data, theirs.data):
        assert sorted(e["status"] for e in entries) == ["OK", "OK", "OK", "error"]
    shared = {"key", "worker", "thread", "status", "startstops"}
    for our, their in zip(ours.data, theirs.data, strict=True):
        assert shared <= set(our) and shared <= set(their)
        for name in shared - {"startstops"}:  # Dask's startstops is a tuple, ours a list
            assert type(our[name]) is type(their[name]), name
        assert [set(s) for s in our["startstops"]] == [
            {"action", "start", "stop"} for s in their["startstops"] if s["action"] == "compute"
        ]
        assert our["key"].split("-")[0] in ("inc", "fail")
        assert their["key"].split("-")[0] in ("inc", "fail")
