"""``progress`` on a real cluster: tqdm bars on a stream, the Jupyter widget, and what it costs
the scheduler (nothing)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from storied import Client, LocalCluster, progress
from storied.diagnostics.progress import ProgressGroups
from tests.engine.helpers import fail, inc


def slow_double(x: int) -> int:
    time.sleep(0.02)
    return 2 * x


def bars(stream: io.StringIO) -> str:
    return stream.getvalue().replace("\r", "\n")


def test_groups_count_each_key_once_per_prefix() -> None:
    groups = ProgressGroups(["inc-1", "inc-2", "inc-2", "add-3"], lambda key: key.split("-")[0])
    assert groups.total == {"inc": 2, "add": 1} and groups.remaining == 3
    assert groups.finish("inc-1", failed=False) == "inc"
    assert groups.finish("inc-1", failed=False) is None  # done already
    assert groups.finish("other-9", failed=True) is None  # never tracked
    assert groups.finish("add-3", failed=True) == "add"
    assert (groups.done, groups.erred, groups.remaining) == (
        {"inc": 1, "add": 1},
        {"inc": 0, "add": 1},
        1,
    )


def test_a_bar_per_prefix_in_a_terminal_blocks_until_all_are_done(client: Client) -> None:
    incs = client.map(inc, range(20))
    doubles = client.map(slow_double, range(5))
    stream = io.StringIO()
    progress(incs, {"d": doubles}, file=stream)
    assert all(future.done() for future in incs + doubles)
    drawn = bars(stream)
    assert "inc: 100%" in drawn and "20/20" in drawn
    assert "slow_double: 100%" in drawn and "5/5" in drawn
    assert "slow_double:   0%" in drawn  # it started empty: the work was followed, not summed


def test_one_bar_when_not_multi_and_failures_count_as_done(client: Client) -> None:
    futures = [*client.map(inc, range(100, 104)), client.submit(fail, 1)]
    stream = io.StringIO()
    progress(futures, multi=False, file=stream)
    drawn = bars(stream)
    assert "Completed: 100%" in drawn and "5/5" in drawn and "erred 1" in drawn
    assert "inc:" not in drawn


def test_complete_false_leaves_out_what_is_done(client: Client) -> None:
    finished = client.map(inc, range(200, 210))
    client.gather(finished)
    pending = client.map(slow_double, range(200, 203))
    stream = io.StringIO()
    progress(finished + pending, complete=False, file=stream)
    drawn = bars(stream)
    assert "3/3" in drawn and "inc" not in drawn


def test_a_persisted_dask_array_has_a_bar_of_its_chunks(client: Client) -> None:
    da = pytest.importorskip("dask.array")
    x = client.persist(da.ones((40, 40), chunks=10) + 1)
    stream = io.StringIO()
    progress(x, file=stream)
    assert "16/16" in bars(stream)
    assert float(x.sum().compute()) == 2 * 40 * 40


def test_what_it_cannot_follow_is_a_clear_error(client: Client) -> None:
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match="persist it first"):
        progress(da.ones(10, chunks=5))
    with pytest.raises(TypeError, match="not int"):
        progress(5)
    with pytest.raises(ValueError, match="group_by"):
        progress(client.submit(inc, 1), group_by="spans", file=io.StringIO())


def test_it_asks_the_scheduler_nothing(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured: a bar follows the client's own futures, so the scheduler gets no request and no
    message from it however long the work takes."""
    futures = client.map(slow_double, range(300, 310))
    assert client._stream is not None
    sent: list[Any] = []
    stream_request = client._stream.request

    def counted_request(*args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return stream_request(*args, **kwargs)

    monkeypatch.setattr(client._stream, "request", counted_request)
    monkeypatch.setattr(client, "_send", lambda msg: sent.append(msg))
    progress(futures, file=io.StringIO())
    monkeypatch.undo()
    assert sent == []


WIDGET_SCRIPT = """
import json, sys, time
from storied import Client, progress
from storied.diagnostics.widget import ProgressWidget

def slow_double(x):
    time.sleep(0.02)
    return 2 * x

def fail(x):
    raise ZeroDivisionError(x)

with Client(sys.argv[1]) as client:
    futures = [*client.map(slow_double, range(400, 406)), client.submit(fail, 2)]
    widget = progress(futures, notebook=True)
    assert isinstance(widget, ProgressWidget), type(widget)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and widget.groups.remaining:
        time.sleep(0.01)
    print(json.dumps({
        group: [bar.value, bar.max, bar.bar_style, widget.counts[group].value]
        for group, bar in widget.bars.items()
    }))
"""


def test_the_notebook_widget_fills_per_prefix(cluster: LocalCluster) -> None:
    """In a process of its own: the test suite's ``tests/comm`` hides the ``comm`` package
    ipywidgets needs from this one."""
    pytest.importorskip("ipywidgets")
    done = subprocess.run(
        [sys.executable, "-c", WIDGET_SCRIPT, cluster.scheduler_address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "STORIED_AUTH_TOKEN": cluster.security.token or ""},
    )
    assert done.returncode == 0, done.stderr
    bars = json.loads(done.stdout.strip().splitlines()[-1])
    assert bars == {
        "slow_double": [6, 6, "success", "6 / 6"],
        "fail": [1, 1, "danger", "1 / 1, 1 erred"],
    }


def test_a_bar_stops_when_its_client_closes(cluster: LocalCluster) -> None:
    """The futures of a closed client never finish: the bar returns rather than hang."""
    client = Client(cluster)
    forever = client.submit(time.sleep, 3, pure=False)
    closer = threading.Timer(0.3, client.close)
    closer.start()
    stream = io.StringIO()
    started = time.monotonic()
    progress(forever, file=stream)
    closer.join()
    assert time.monotonic() - started < 2.5  # before the task could end
    assert "0/1" in bars(stream)
