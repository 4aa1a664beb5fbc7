"""Resource telemetry: samples checked at the scheduler, switched off by config, charted."""

from __future__ import annotations

import math

import psutil
import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config
from storied.cli.top import render, sparkline, worker_samples
from storied.record.events import EventRecord
from storied.scheduler.telemetry import checked_sample
from storied.worker.telemetry import SAMPLE_FIELDS


def sample(**changes):
    base = dict.fromkeys(SAMPLE_FIELDS, 0)
    return {**base, "time": 100.0, **changes}


def test_a_sample_keeps_its_fields_and_numbers_only():
    good = sample(cpu=12.5, memory=10**8, managed_bytes=None, extra="dropped")
    assert checked_sample(good) == {k: good[k] for k in SAMPLE_FIELDS}
    for bad in (
        "not a dict",
        sample(time=None),
        sample(cpu="high"),
        sample(memory=True),
        sample(cpu=math.nan),
        sample(sockets=[1]),
    ):
        assert checked_sample(bad) is None, bad


def test_a_sparkline_shares_the_time_axis_and_leaves_gaps_blank():
    assert sparkline([(0.0, 0.0), (5.0, 5.0), (10.0, 10.0)], 0.0, 10.0, width=11) == ("▁    ▅    █")
    assert sparkline([(5.0, 0.0)], 0.0, 10.0, width=3) == " ▁ ", "all zero: the lowest bar"
    assert sparkline([(0.2, 1.0), (0.4, 7.0)], 0.0, 2.0, width=2) == "█ ", "a bar: the highest"


def test_top_turns_transfer_totals_into_rates_and_names_each_worker():
    events = [
        EventRecord(i, "worker-metrics", t, {"worker": "tcp://a:1", "name": "0", **s}, "s")
        for i, (t, s) in enumerate(
            [
                (2.0, sample(time=2.0, transfer_incoming_bytes_total=3000)),
                (1.0, sample(time=1.0, transfer_incoming_bytes_total=1000)),
            ]
        )
    ]
    workers = worker_samples(events)
    [entry] = workers.values()
    assert entry["name"] == "0"
    assert [s["fetched_bps"] for s in entry["samples"]] == [None, 2000.0]
    removal = {"time": 2.5, "cause": "killed", "reason": "worker process 7 was killed by SIGKILL"}
    lines = render(workers, {"tcp://a:1": removal})
    assert any(line.startswith("tcp://a:1 (0): 2 samples; removed at ") for line in lines)
    fetched = next(line for line in lines if line.startswith("  fetched "))
    assert "last 1.95 KiB/s" in fetched and all(len(line) <= 100 for line in lines)


@pytest.fixture
def in_process_cluster(request):
    """In-process workers heartbeating every 50 ms, telemetry as the test's parameter says."""
    with (
        config.set({"worker.heartbeat-interval": "50ms", "worker.telemetry": request.param}),
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def heartbeats_heard(cluster: LocalCluster, count: int) -> None:
    """Wait until the scheduler has heard ``count`` more of its worker's heartbeats."""
    [link] = cluster.scheduler.workers.values()
    for _ in range(count):
        seen = link.last_seen
        poll(lambda: link.last_seen > seen, timeout=10, what="a heartbeat")  # noqa: B023


@pytest.mark.parametrize("in_process_cluster", [False], indirect=True)
def test_telemetry_switched_off_sends_no_samples(in_process_cluster):
    cluster, client = in_process_cluster
    heartbeats_heard(cluster, 3)
    assert client.get_worker_metrics() == {}
    assert next(iter(client.scheduler_info()["workers"].values()))["metrics"] is None


@pytest.mark.parametrize("in_process_cluster", [True], indirect=True)
def test_a_malformed_sample_is_dropped_with_a_warning_and_the_worker_carries_on(
    in_process_cluster, caplog
):
    cluster, client = in_process_cluster
    [worker] = cluster.workers.values()
    poll(lambda: client.get_worker_metrics().get(worker.address), what="a first sample")
    before = len(client.get_worker_metrics()[worker.address])
    cluster.loop.call_soon_threadsafe(
        worker.stream.send, {"op": "heartbeat", "metrics": {"time": "noon"}}
    )
    poll(
        lambda: "Dropping malformed resource samples" in caplog.text,
        what="the scheduler's warning",
    )
    heartbeats_heard(cluster, 2)
    samples = client.get_worker_metrics()[worker.address]
    assert len(samples) > before and all(isinstance(s["time"], float) for s in samples)
    assert client.submit(sum, [1, 2]).result(timeout=10) == 3


@pytest.mark.parametrize("in_process_cluster", [True], indirect=True)
def test_a_worker_that_cannot_sample_still_heartbeats(in_process_cluster, caplog, monkeypatch):
    """psutil refusing (a hardened host) costs the samples, never the heartbeats."""
    cluster, client = in_process_cluster
    [worker] = cluster.workers.values()

    assert worker.telemetry is not None
    process = worker.telemetry._process

    def refuse():
        raise psutil.AccessDenied(process.pid)

    monkeypatch.setattr(process, "memory_info", refuse)  # the sampler's process alone
    poll(lambda: "cannot sample its resource use" in caplog.text, what="the worker's warning")
    before = len(client.get_worker_metrics().get(worker.address, []))
    heartbeats_heard(cluster, 3)
    assert len(client.get_worker_metrics().get(worker.address, [])) == before
    assert worker.address in client.scheduler_info()["workers"]
    assert caplog.text.count("cannot sample its resource use") == 1, "said once"
