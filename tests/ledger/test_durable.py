"""A record that outlives the cluster: restarts, SIGKILL, the CLI and the timeline, end to end."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import storied.config
from storied import Client, LocalCluster
from storied.comm import connect
from storied.record.ledger import Ledger
from storied.record.shipments import pack_shipment


def inc(x: int) -> int:
    return x + 1


def storied_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storied", *args], capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_restart_reads_back_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with (
        LocalCluster(n_workers=1, processes=False, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        future = client.submit(inc, 1)
        assert future.result() == 2
        key = future.key
        client.log_event("deploys", {"version": 7})
        first_story = cluster.scheduler.story(key)
    assert [t[1:3] for t in first_story] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
    ]

    with (
        LocalCluster(n_workers=1, processes=False, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        story = cluster.scheduler.story(key)
        assert story[:3] == first_story
        assert ("memory", "released") in [t[1:3] for t in story]
        assert client.get_events("deploys", run="all")[-1][1] == {"version": 7}
        assert client.get_events("deploys") == () == client.get_events("deploys", run=2)
        assert client.get_events("deploys", run=1) == client.get_events("deploys", run="all")
        assert client.story(key) == []  # the live story tells this run's unless asked
        every_run = client.story(key, run="all")
        places = {entry["where"] for entry in every_run}
        assert "scheduler" in places and len(places) == 2  # the dead worker's entries too
        assert {entry.run_id for entry in every_run} == {1}
        assert client.story(key, run=1) == every_run and client.story(key, run=2) == []
        with pytest.raises(ValueError, match="run must be None"):
            client.story(key, run="latest")
    runs = Ledger(path).runs()
    assert len(runs) == 2 and all(run["ended"] for run in runs)


def test_a_worker_with_a_short_log_ships_every_transition_before_it_falls_out(
    tmp_path: Path, caplog
) -> None:
    """A worker ships from its own log, which keeps only the latest transitions: it ships
    once half of it waits, not just every 50 ms, and the ledger misses none."""
    path = tmp_path / "ledger.db"
    with (
        caplog.at_level(logging.WARNING, logger="storied.worker"),
        storied.config.set({"worker.transition-log-length": 64}),
        LocalCluster(n_workers=1, processes=False, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(inc, range(500))
        assert client.gather(futures) == list(range(1, 501))
        [worker] = [w.address for w in cluster.workers.values()]
    computed = {
        record.key
        for record in Ledger(path).transitions(start="executing", finish="memory", where=worker)
    }
    assert computed == {future.key for future in futures}
    assert "fell out" not in caplog.text


def test_cli_reads_a_ledger_with_no_cluster(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(inc, range(20))
        assert client.gather(futures) == list(range(1, 21))
        key = futures[0].key
        client.log_event("ops", {"note": "hello"})

    story = storied_command("story", key, "--ledger", str(path), "--json")
    assert story.returncode == 0, story.stderr
    rows = [json.loads(line) for line in story.stdout.splitlines()]
    assert ("processing", "memory") in [(r["start"], r["finish"]) for r in rows]
    assert any(r["where"] != "scheduler" for r in rows)  # worker transitions shipped in

    events = storied_command("events", "ops", "--ledger", str(path))
    assert events.returncode == 0 and '"note": "hello"' in events.stdout

    logs = storied_command("logs", "--ledger", str(path), "--level", "INFO")
    assert "Register worker" in logs.stdout and "storied.worker" in logs.stdout

    trace_path = tmp_path / "trace.json"
    timeline = storied_command("timeline", "--ledger", str(path), "-o", str(trace_path))
    assert timeline.returncode == 0, timeline.stderr
    slices = [e for e in json.loads(trace_path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert sorted(s["name"] for s in slices) == sorted(f.key for f in futures)


def test_sigkill_loses_at_most_the_last_batch(tmp_path: Path) -> None:
    """Everything finished more than a flush interval (0.2 s) before a SIGKILL is on disk."""
    path = tmp_path / "ledger.db"
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "STORIED_AUTH_TOKEN": ""}
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storied",
            "scheduler",
            "--port",
            address.rsplit(":", 1)[1],
            "--ledger",
            str(path),
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "storied", "worker", address], env=env, stderr=subprocess.DEVNULL
    )
    client = None
    try:
        client = Client(address, timeout=20)
        client.wait_for_workers(1, timeout=20)
        finished: list[tuple[str, float]] = []
        deadline = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < deadline:
            future = client.submit(inc, i)
            future.result(timeout=10)
            finished.append((future.key, time.time()))
            i += 1
        scheduler.send_signal(signal.SIGKILL)
        killed_at = time.time()
        scheduler.wait(10)
    finally:
        for process in (scheduler, worker):
            if process.poll() is None:
                process.kill()
            process.wait(10)
        if client is not None:
            client.close()
    safely_before = [key for key, at in finished if at < killed_at - 1.0]
    assert len(safely_before) > 10
    ledger = Ledger(path)
    on_disk = {
        r.key
        for r in ledger.transitions(keys=safely_before, finish="memory")
        if r.where == "scheduler"
    }
    assert on_disk == set(safely_before)


def test_cli_scheduler_rejects_a_bad_retention(tmp_path: Path) -> None:
    result = storied_command("scheduler", "--retain", "soon", "--ledger", str(tmp_path / "x.db"))
    assert result.returncode == 2 and "--retain" in result.stderr


def test_a_worker_shipping_malformed_transitions_loses_only_those(tmp_path: Path, caplog) -> None:
    """A (fake) worker on real TCP ships junk, then a good shipment: a message that is no
    shipment is logged and dropped as it comes, a shipment of malformed transitions is skipped
    with a WARNING where it is read, the good one reaches the story, and the scheduler carries
    on serving. The
    fake never answers the scheduler's questions: a story waits for it only so long."""
    address = "tcp://127.0.0.1:1"  # never dialled: nothing is placed on this worker

    async def ship(scheduler_address: str, security: Any) -> Any:
        comm = await connect(scheduler_address, security, timeout=10)
        await comm.send({"op": "register-worker", "address": address, "nthreads": 1})
        reply = await comm.read(10)
        good = [["shipped"], ["executing"], ["memory"], [{}], ["from-the-fake"], [1.5]]
        bad = [["shipped"], ["executing"], ["memory"], [{"x": 1}], ["junk"], [1.0]]
        await comm.send(
            [
                {"op": "worker-records", "transitions": pack_shipment(bad), "logs": []},
                {"op": "worker-records", "transitions": "not a shipment", "logs": []},
                {"op": "worker-records", "transitions": pack_shipment(good), "logs": []},
            ]
        )
        return comm, reply

    with (
        storied.config.set({"scheduler.worker-reply-timeout": "0.5s"}),
        LocalCluster(n_workers=1, ledger=tmp_path / "ledger.db") as cluster,
        Client(cluster) as client,
        caplog.at_level(logging.INFO, logger="storied.scheduler"),
    ):
        on_loop = asyncio.run_coroutine_threadsafe
        shipped = on_loop(ship(cluster.scheduler_address, cluster.security), cluster.loop)
        comm, reply = shipped.result(20)
        assert reply["status"] == "OK" and reply["durable"] is True
        deadline = time.monotonic() + 10
        while not client.story("from-the-fake"):
            assert time.monotonic() < deadline, "the good shipment never reached the story"
            time.sleep(0.05)
        (entry,) = client.story("shipped")
        assert address in cluster.scheduler.workers  # the story did not wait for its ttl
        assert (entry["where"], entry["stimulus_id"], entry["timestamp"]) == (
            address,
            "from-the-fake",
            1.5,
        )
        # the message that is no shipment is refused as it comes; the shipment whose
        # transitions are malformed is stored as it came, and skipped where it is read
        messages = [r.getMessage() for r in caplog.records]
        refused = [m for m in messages if "Dropping malformed transitions" in m]
        skipped = [m for m in messages if "Skipping a block" in m]
        assert len(refused) == 1 and "packed shipment" in refused[0]
        assert skipped and all(address in m and "str to str" in m for m in skipped)
        assert client.submit(inc, 41).result() == 42
        on_loop(comm.close(), cluster.loop).result(20)


def test_a_stuck_ledger_holds_up_queries_but_not_the_scheduler(tmp_path: Path) -> None:
    """Another connection holds the file's write lock: the writer cannot commit, so queries
    (which flush first) wait; tasks go on meanwhile, and the answers come once the lock goes."""
    path = tmp_path / "ledger.db"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, ledger=path) as cluster,
        Client(cluster) as client,
    ):
        future = client.submit(inc, 1)
        assert future.result() == 2
        key = future.key
        client.log_event("deploys", {"version": 7})
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(2) as asker:
            try:
                pending = asker.submit(client.story, key)
                pending_events = asker.submit(client.get_events, "deploys")
                # the queries reach the scheduler within milliseconds and then waits for the
                # disk; tasks must keep finishing all the while
                finished = 0
                keep_going_until = time.monotonic() + 1.5
                while time.monotonic() < keep_going_until:
                    assert client.submit(inc, 100 + finished).result(timeout=5) == 101 + finished
                    finished += 1
                assert not pending.done() and not pending_events.done()
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            story = pending.result(timeout=15)
            assert [msg for _, msg in pending_events.result(timeout=15)] == [{"version": 7}]
    assert [
        (entry["start"], entry["finish"]) for entry in story if entry["where"] == "scheduler"
    ] == [
        ("released", "waiting"),
        ("waiting", "processing"),
        ("processing", "memory"),
    ]
