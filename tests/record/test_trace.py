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
