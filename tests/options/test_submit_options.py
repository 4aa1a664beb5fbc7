"""Dask's submit/map options on a real cluster: priority, workers, retries, key, pure, batches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from storied import Client, get_worker
from tests.engine.helpers import poll


def block_until(path: str) -> None:
    """Keeps its worker's thread busy until the test creates ``path`` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def stamp(label: Any) -> tuple[Any, float]:
    return label, time.time()


def where(x: Any = None) -> str:
    return get_worker().name


def flaky(counter: str, failures: int) -> int:
    """Fails the first ``failures`` calls (counted in a file, across processes)."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= failures:
        raise RuntimeError(f"flaky call {calls}")
    return calls


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def known_to_scheduler(key: str, dask_scheduler: Any) -> bool:
    return key in dask_scheduler.tasks


def reached_worker(client: Any, key: str) -> bool:
    """The task is queued where priorities order it: on the scheduler, which holds back what
    workers cannot run yet (storied's story shows it queued), or ready on the worker."""
    if not isinstance(client, Client):
        return client.run_on_scheduler(known_to_scheduler, key)
    return any(entry.finish in ("queued", "ready") for entry in client.story(key))


def overtaking_order(client: Any, flag: Path) -> list[Any]:
    """On a busy one-thread worker: five low-priority tasks, then a high-priority one."""
    blocker = client.submit(block_until, str(flag), pure=False)
    low = [client.submit(stamp, f"low-{i}", pure=False) for i in range(5)]
    high = client.submit(stamp, "high", priority=10, pure=False)
    poll(lambda: all(reached_worker(client, f.key) for f in [*low, high]), 10, "tasks queued")
    flag.touch()
    blocker.result(timeout=30)
    results = client.gather([*low, high])
    return [label for label, _ in sorted(results, key=lambda result: result[1])]


def test_a_later_high_priority_task_overtakes_queued_ones(start_worker, bare_client, tmp_path):
    start_worker("solo", 1)
    order = overtaking_order(bare_client, tmp_path / "go")
    # worker-saturation 1.1 on one thread: the worker holds two tasks (the blocker, low-0)
    # and the scheduler queues the rest, where "high" overtakes them (as in Dask)
    assert order == ["low-0", "high", "low-1", "low-2", "low-3", "low-4"]


def test_dask_orders_the_same_way(tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        order = overtaking_order(client, tmp_path / "go")
    # Dask sends a worker a few tasks beyond its threads (worker-saturation) and queues the rest
    # on the scheduler, where "high" overtakes the queued ones, as in storied. Dask's lows tie
    # (one fifo_timeout generation, each first in its call) and may run in any order; storied
    # breaks such ties by arrival
    assert sorted(order) == ["high", "low-0", "low-1", "low-2", "low-3", "low-4"]
    assert order[-1] != "high"


def test_workers_restricts_and_allow_other_workers_only_prefers(start_worker, bare_client):
    start_worker("a", 1)
    start_worker("b", 1)
    client = bare_client
    assert set(client.gather(client.map(where, range(6), workers=["b"], pure=False))) == {"b"}
    assert client.submit(where, workers="a", pure=False).result(timeout=30) == "a"
    loose = client.submit(where, workers=["nobody"], allow_other_workers=True, pure=False)
    assert loose.result(timeout=30) in {"a", "b"}
    strict = client.submit(where, workers=["nobody"], pure=False)
    poll(lambda: any(e.finish == "no-worker" for e in client.story(strict.key)))
    assert strict.status == "pending"
    client.cancel(strict)


def test_dask_annotate_around_submit_and_map_sets_their_options(
    start_worker, bare_client, tmp_path
):
    """As in Dask: the annotations apply, and an option given to the call wins."""
    import dask

    start_worker("a", 1)
    start_worker("b", 1)
    client = bare_client
    with dask.annotate(workers=["b"], retries=1):
        mapped = client.map(where, range(4), pure=False)
        assert client.submit(where, workers=["a"], pure=False).result(timeout=30) == "a"
        flaky_once = client.submit(flaky, str(tmp_path / "calls"), 1)
    assert set(client.gather(mapped)) == {"b"}
    assert flaky_once.result(timeout=30) == 2
    with dask.annotate(workers=["nobody"], allow_other_workers=True):
        assert client.submit(where, pure=False).result(timeout=30) in {"a", "b"}


def test_allow_other_workers_needs_workers(client):
    with pytest.raises(ValueError, match="allow_other_workers"):
        client.submit(where, allow_other_workers=True)
    with pytest.raises(ValueError, match="allow_other_workers"):
        client.map(where, [1], allow_other_workers=True)
    with pytest.raises(TypeError, match="allow_other_workers"):
        client.submit(where, workers=["a"], allow_other_workers="yes")


def test_retries_rerun_a_flaky_function(client, tmp_path):
    counter = str(tmp_path / "calls")
    assert client.submit(flaky, counter, 2, retries=2).result(timeout=30) == 3
    counter = str(tmp_path / "calls-again")
    with pytest.raises(RuntimeError, match="flaky call 2"):
        client.submit(flaky, counter, 2, retries=1).result(timeout=30)
    mapped = client.map(flaky, [str(tmp_path / f"m{i}") for i in range(3)], [1] * 3, retries=1)
    assert client.gather(mapped) == [2, 2, 2]


def test_key_names_the_task_and_pure_false_makes_a_fresh_one_each_call(client):
    named = client.submit(stamp, "x", key="my-own-key")
    assert named.key == "my-own-key" and named.result(timeout=30)[0] == "x"
    same = [client.submit(stamp, "y") for _ in range(2)]
    assert same[0].key == same[1].key
    fresh = [client.submit(stamp, "y", pure=False) for _ in range(2)]
    assert fresh[0].key != fresh[1].key
    first, second = client.gather(fresh)
    assert first[1] != second[1]  # both ran


def test_options_are_never_passed_to_the_function(client):
    future = client.submit(
        echo,
        a=1,
        key="echo-1",
        workers=None,
        resources=None,
        retries=1,
        priority=3,
        fifo_timeout="10ms",
        allow_other_workers=False,
        pure=False,
    )
    assert future.result(timeout=30) == ((), {"a": 1})
    mapped = client.map(echo, [1, 2, 3], batch_size=2, priority=-1, retries=0, b=0)
    assert client.gather(mapped) == [((i,), {"b": 0}) for i in (1, 2, 3)]


def test_batch_size_sends_the_map_in_batches(bare_client, start_worker):
    start_worker("batcher", 2)
    client = bare_client
    before = len(client.get_events("scheduler"))
    keys = [f"batched-{i}" for i in range(25)]
    futures = client.map(stamp, range(25), key=keys, batch_size=10)
    assert [f.key for f in futures] == keys
    assert [label for label, _ in client.gather(futures)] == list(range(25))
    graphs = [
        msg["n_tasks"]
        for _, msg in client.get_events("scheduler")[before:]
        if msg.get("action") == "update-graph"
    ]
    assert graphs == [10, 10, 5]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"priority": "high"}, TypeError, "priority"),
        ({"priority": None}, TypeError, "priority"),
        ({"retries": -1}, TypeError, "retries"),
        ({"retries": 1.5}, TypeError, "retries"),
        ({"fifo_timeout": "soon"}, ValueError, "fifo_timeout"),
        ({"fifo_timeout": None}, TypeError, "fifo_timeout"),
        ({"workers": 1.5}, TypeError, "workers"),
        ({"resources": {"GPU": "x"}}, TypeError, "resources"),
    ],
)
def test_bad_option_values_fail_at_the_caller(client, options, error, match):
    with pytest.raises(error, match=match):
        client.submit(stamp, 1, **options)
    with pytest.raises(error, match=match):
        client.map(stamp, [1], **options)
    assert client.submit(stamp, "still fine", pure=False).result(timeout=30)[0] == "still fine"


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "10"])
def test_a_bad_batch_size_fails_at_the_caller(client, batch_size):
    with pytest.raises(TypeError, match="batch_size"):
        client.map(stamp, [1, 2], batch_size=batch_size)


class Tally:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, x: int) -> int:
        self.n += x
        return self.n


def test_actor_and_actors_make_actors_with_the_other_options(client):
    one = client.submit(Tally, 10, actor=True, priority=5, retries=1)
    assert one.result(timeout=30).add(1).result() == 11
    mapped = client.map(Tally, [1, 2], actors=True, key=["tally-a", "tally-b"])
    assert [f.key for f in mapped] == ["tally-a", "tally-b"]
    assert [a.add(1).result() for a in client.gather(mapped)] == [2, 3]


@pytest.mark.parametrize(
    ("options", "extra", "reason"),
    [
        ({"priority": "high"}, {}, "priority must be a number"),
        ({"resources": {"GPU": -1}}, {}, "amount of 'GPU' must be finite and >= 0"),
        (None, {"fifo_timeout": "soon"}, "fifo_timeout must be a number"),
        (None, {"calls": [5]}, "must be counts adding up to 1 tasks"),
    ],
)
def test_a_malformed_graph_from_the_wire_is_rejected_and_the_scheduler_goes_on(
    client, options, extra, reason
):
    """What another client (or the dask-graph path) might send: refused, logged, no crash."""

    def rejections() -> int:
        logs = client.get_scheduler_logs()
        return sum("Rejected graph" in text and reason in text for _, text in logs)

    before = rejections()
    function_id = "f-malformed"
    task = ["malformed-task", function_id, b"", [], 0, None, options]
    client._send(
        {
            "op": "update-graph",
            "tasks": [task],
            "functions": {function_id: b"not even a pickle"},
            "wanted": [],
            "stimulus_id": "malformed-graph",
            **extra,
        }
    )
    poll(lambda: rejections() > before, 10, "the scheduler logged the rejection")
    assert client.submit(stamp, "after", pure=False).result(timeout=30)[0] == "after"
