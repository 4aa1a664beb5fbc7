from __future__ import annotations

import json

from storied.record.trace import chrome_trace


def execution(key, worker, thread, start, stop, outcome="memory"):
    return {
        "key": key,
        "worker": worker,
        "thread": thread,
        "start": start,
        "stop": stop,
        "outcome": outcome,
    }


def test_one_track_per_worker_thread_with_named_metadata():
    trace = chrome_trace(
        [
            execution("a", "tcp://w:1", 140001, 10.0, 10.5),
            execution("b", "tcp://w:1", 140002, 10.0, 11.0, "erred"),
            execution("c", "tcp://w:2", 140001, 12.0, 12.25),
            execution("d", "tcp://w:1", 140001, 11.0, 11.5),
        ]
    )
    json.dumps(trace)  # must be plain JSON
    events = trace["traceEvents"]
    names = {(e["name"], e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names == {
        ("process_name", 1, 0): "tcp://w:1",
        ("thread_name", 1, 1): "thread 140001",
        ("thread_name", 1, 2): "thread 140002",
        ("process_name", 2, 0): "tcp://w:2",
        ("thread_name", 2, 3): "thread 140001",
    }
    slices = [e for e in events if e["ph"] == "X"]
    assert [(e["name"], e["pid"], e["tid"]) for e in slices] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("c", 2, 3),
        ("d", 1, 1),
    ]
    first = slices[0]
    assert first["ts"] == 10.0e6 and first["dur"] == 0.5e6
    assert first["args"] == {"key": "a", "outcome": "memory", "duration": 0.5}
    assert slices[1]["args"]["outcome"] == "erred"


def test_no_executions_make_an_empty_trace():
    assert chrome_trace([])["traceEvents"] == []


def test_failed_attempts_are_coloured_and_a_retried_one_says_so():
    trace = chrome_trace(
        [
            execution("flaky", "tcp://w:1", 1, 10.0, 10.5, "erred"),
            execution("flaky", "tcp://w:1", 1, 11.0, 11.5),
            execution("bad", "tcp://w:1", 1, 12.0, 12.5, "erred"),
        ]
    )
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["args"]["outcome"], e["cname"]) for e in slices] == [
        ("flaky", "retried", "bad"),
        ("flaky", "memory", "good"),
        ("bad", "erred", "terrible"),
    ]


def test_names_transfers_and_removals_join_the_executions():
    trace = chrome_trace(
        [execution("a", "tcp://w:1", 7, 10.0, 10.5)],
        names={"tcp://w:1": "alpha", "tcp://w:2": "beta"},
        transfers=[{"key": "a", "worker": "tcp://w:2", "start": 10.6, "stop": 10.7}],
        removals=[
            {
                "worker": "tcp://w:1",
                "cause": "killed",
                "reason": "worker process 9 was killed by SIGKILL",
                "processing-tasks": ["b"],
                "lost-computed-tasks": ["a"],
                "time": 11.0,
            }
        ],
    )
    json.dumps(trace)
    events = trace["traceEvents"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M"}
    assert names == {
        (1, 0): "tcp://w:1 (alpha)",
        (1, 1): "thread 7",
        (2, 0): "tcp://w:2 (beta)",
        (2, 2): "transfers",
    }
    [transfer] = [e for e in events if e.get("cat") == "transfer"]
    assert (transfer["name"], transfer["pid"], transfer["tid"]) == ("a", 2, 2)
    assert transfer["ts"] == 10.6e6 and round(transfer["dur"]) == round(0.1e6)
    [marker] = [e for e in events if e.get("cat") == "worker-loss"]
    assert (marker["ph"], marker["s"], marker["pid"], marker["ts"]) == ("i", "p", 1, 11.0e6)
    assert marker["name"] == "worker removed: killed"
    assert marker["args"] == {
        "reason": "worker process 9 was killed by SIGKILL",
        "processing-tasks": ["b"],
        "lost-computed-tasks": ["a"],
        "lost-scattered-tasks": [],
    }
