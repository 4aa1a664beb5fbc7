"""The two examples of Dask's "Logging" page, verbatim with ``storied`` for ``dask.distributed``."""

from __future__ import annotations

import re
import time
from time import time as now

import pytest

import storied
from storied import Client, LocalCluster

KEY = re.compile(r"inc-[0-9a-f]{32}")


def inc(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def client_and_scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        yield client, cluster.scheduler


def test_task_transition_log_example(client_and_scheduler) -> None:
    client, s = client_and_scheduler
    f = client.submit(inc, 123)
    f.result()
    assert re.fullmatch(r"<Future: finished, type: builtins\.int, key: inc-[0-9a-f]{32}>", repr(f))
    story = s.story(f.key)
    assert len(story) == 3
    for entry in story:
        assert len(entry) == 5
        assert isinstance(entry[4], float) and abs(entry[4] - now()) < 60
    assert [entry[:4] for entry in story] == [
        (f.key, "released", "waiting", {f.key: "processing"}),
        (f.key, "waiting", "processing", {}),
        (f.key, "processing", "memory", {}),
    ]
    assert story[0][4] <= story[1][4] <= story[2][4]


def test_structured_log_example(client_and_scheduler) -> None:
    client, _ = client_and_scheduler

    def myfunc(x):
        start = now()
        ...
        stop = now()
        storied.get_worker().log_event("runtimes", {"start": start, "stop": stop})

    futures = client.map(myfunc, range(10))
    deadline = time.monotonic() + 30
    while len(client.get_events("runtimes")) < 10:
        assert time.monotonic() < deadline, "events did not arrive"
        time.sleep(0.01)
    events = client.get_events("runtimes")
    assert isinstance(events, tuple) and len(events) == 10
    for timestamp, msg in events:
        assert isinstance(timestamp, float)
        assert set(msg) == {"start", "stop"} and msg["start"] <= msg["stop"] <= timestamp
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    del futures
