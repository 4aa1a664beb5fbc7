"""``client.get_events`` reads in pages (issue "Large data at wire speed", item 7): a large
topic on a ledger keeps the scheduler's memory flat; limit/since/until; oversized events
refused at the caller from the client, a task and the scheduler."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import ANY

import psutil
import pytest
from engine.helpers import poll

from storied import Client, LocalCluster, config, get_worker
from storied.record import Record
from storied.record.events import EventTooLarge
from storied.record.ledger import Ledger

from .helpers import unique


@pytest.fixture
def paged_cluster():
    """A cluster in this process whose scheduler answers in pages of 7 events."""
    with (
        config.set({"events.page-size": 7, "events.max-event-size": "10kB"}),
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def test_limit_since_and_until_over_many_pages(paged_cluster):
    _, client = paged_cluster
    topic = unique("paged")
    for i in range(100):
        client.log_event(topic, i)
    events = poll(lambda: len(client.get_events(topic)) == 100 and client.get_events(topic))
    assert [msg for _, msg in events] == list(range(100))
    stamps = [t for t, _ in events]
    assert client.get_events(topic, limit=10) == events[-10:]
    assert client.get_events(topic, limit=0) == ()
    assert client.get_events(topic, since=stamps[30]) == events[30:]
    assert client.get_events(topic, until=stamps[30]) == events[:30]
    assert client.get_events(topic, since=stamps[20], until=stamps[80], limit=15) == events[65:80]
    detailed = client.get_events(topic, detail=True, limit=3)
    assert [e["msg"] for e in detailed] == [97, 98, 99]
    assert {e["topic"] for e in detailed} == {topic}
    everything = client.get_events(limit=5)
    assert everything[topic] == events[-5:]
    assert all(len(evs) <= 5 for evs in everything.values())


def test_a_bad_window_is_refused_at_the_caller(paged_cluster):
    _, client = paged_cluster
    for bad in ({"limit": -1}, {"limit": 2.5}, {"since": "yesterday"}, {"until": True}):
        with pytest.raises(TypeError, match=next(iter(bad))):
            client.get_events("t", **bad)


def _log_big_from_task(topic: str, size: int) -> None:
    get_worker().log_event(topic, "x" * size)


def _log_big_from_scheduler(topic: str, size: int, dask_scheduler) -> None:
    dask_scheduler.log_event(topic, "x" * size)


def test_an_oversized_event_is_refused_at_every_caller(paged_cluster):
    _, client = paged_cluster
    topic = unique("big")
    with pytest.raises(EventTooLarge, match=r"exceeds events\.max-event-size"):
        client.log_event(topic, "x" * 20_000)
    with pytest.raises(EventTooLarge, match=r"exceeds events\.max-event-size"):
        client.submit(_log_big_from_task, topic, 20_000).result(timeout=10)
    with pytest.raises(EventTooLarge, match=r"exceeds events\.max-event-size"):
        client.run_on_scheduler(_log_big_from_scheduler, topic, 20_000)
    client.log_event(topic, "fits")
    client.submit(_log_big_from_task, topic, 100).result(timeout=10)
    poll(lambda: len(client.get_events(topic)) == 2)
    # a peer that skips the check at its end: the scheduler drops the event, and serves on
    client._send({"op": "log-event", "topic": [topic], "packed": b"\xa1x" * 10_000})
    client.log_event(topic, "after")
    poll(lambda: [m for _, m in client.get_events(topic)][-1:] == ["after"])
    assert len(client.get_events(topic)) == 3


def _events_that_lose_tasks(dask_scheduler) -> dict:
    """The scheduler's own events about many keys are cut to fit, never refused."""
    dask_scheduler._log_own_event("all", {"action": "retry", "keys": ["k" * 40] * 1_000})
    return dask_scheduler.get_events("all")[-1][1]


def test_the_schedulers_own_large_events_are_cut_to_fit(paged_cluster):
    _, client = paged_cluster
    msg = client.run_on_scheduler(_events_that_lose_tasks)
    assert msg == {"action": "retry", "keys": "<1000 items omitted: over events.max-event-size>"}


@pytest.mark.parametrize("durable", [False, True])
def test_the_byte_cap_evicts_in_memory_and_the_ledger_keeps_all(tmp_path, durable):
    topic = unique("capped")
    with (
        config.set({"events.max-bytes-per-topic": "10kB"}),
        LocalCluster(
            n_workers=0,
            processes=False,
            dashboard_address=None,
            ledger=tmp_path / "l.db" if durable else None,
        ) as cluster,
        Client(cluster) as client,
    ):
        for i in range(200):
            client.log_event(topic, f"{i:04d}" + "y" * 196)
        client.log_event(topic, "last")
        poll(lambda: client.get_events(topic, limit=1) == ((ANY, "last"),), timeout=10)
        kept = [m[:4] for _, m in client.get_events(topic)][:-1]
        if durable:
            assert kept == [f"{i:04d}" for i in range(200)]
        else:  # ~10 kB of ~204-byte events: the newest 48 or so
            assert 40 <= len(kept) <= 50
            assert kept == [f"{i:04d}" for i in range(200 - len(kept), 200)]
        assert cluster.scheduler.record.event_counts()[topic] == 201


# ------------------------------------------------------------------ memory stays flat

N_EVENTS = 200_000
EVENT_BYTES = 500


def _write_ledger(path: Path, topic: str) -> None:
    """A ledger from an earlier run holding ``N_EVENTS`` events of ``topic`` (~100 MB)."""
    record = Record(ledger=Ledger(path, queue_size=N_EVENTS + 10, batch_size=2_000))
    try:
        for i in range(N_EVENTS):
            record.event([topic], f"{i:07d}" + "z" * (EVENT_BYTES - 10), "test", 1e9 + i)
    finally:
        record.close()


def _start_scheduler(ledger: Path, log: Path) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIED_")}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "storied",
                "scheduler",
                "--port",
                "0",
                "--ledger",
                str(ledger),
                "--dashboard-address",
                "none",
            ],
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    found = poll(lambda: re.search(r"Scheduler at (tcp://\S+)", log.read_text()), timeout=20)
    return process, found.group(1)


def test_a_huge_topic_on_a_ledger_is_read_with_flat_scheduler_memory(tmp_path):
    topic = "huge"
    ledger = tmp_path / "huge.db"
    _write_ledger(ledger, topic)
    process, address = _start_scheduler(ledger, tmp_path / "scheduler.log")
    try:
        scheduler = psutil.Process(process.pid)
        with Client(address, timeout=10) as client:
            assert client.get_events(topic, limit=3)[-1][1].startswith(f"{N_EVENTS - 1:07d}")
            baseline = scheduler.memory_info().rss
            peak = baseline
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, scheduler.memory_info().rss)
                    done.wait(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                started = time.monotonic()
                events = client.get_events(topic)
                elapsed = time.monotonic() - started
            finally:
                done.set()
                sampler.join()
        assert len(events) == N_EVENTS
        assert [int(m[:7]) for _, m in events] == list(range(N_EVENTS))  # all, in order
        assert [t for t, _ in events] == [1e9 + i for i in range(N_EVENTS)]
        growth = peak - baseline
        total = N_EVENTS * EVENT_BYTES
        # the topic is ~100 MB; the scheduler holds a page (1000 events, ~0.5 MB) at a time
        assert growth < total / 5, f"scheduler RSS grew {growth / 2**20:.0f} MiB in {elapsed:.1f}s"
    finally:
        process.terminate()
        process.wait(10)
