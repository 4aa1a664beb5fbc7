"""Results beyond a worker's memory target go to disk and come back intact (issue item 7)."""

from __future__ import annotations

import os

from engine.helpers import poll

from storied import get_worker, wait

from .helpers import CHUNK, MB, budgeted_client, chunk, data_on_worker, memory_events, spill_totals

N_RESULTS = 15


def hold_ballast(megabytes: int) -> int:
    """Memory that is not a result (unmanaged), kept on the worker."""
    get_worker().ballast = b"x" * (megabytes * MB)
    return megabytes


def test_results_beyond_the_target_spill_to_disk_and_come_back_correctly():
    # 400 MB limit, target 0.2: 80 MB of results in memory, the rest of 150 MB on disk
    with budgeted_client("400MB", target=0.2) as client:
        futures = client.map(chunk, range(N_RESULTS))
        wait(futures, timeout=30)
        [held] = client.run(data_on_worker).values()
        assert held["in-memory"] + held["spilled"] == N_RESULTS
        assert held["managed"] <= 80 * MB
        assert held["spilled"] >= N_RESULTS - 80 * MB // CHUNK, held
        assert len(held["files"]) == held["spilled"], "one file per spilled key"
        assert held["spilled-bytes"] == held["spilled"] * CHUNK

        assert client.gather(futures) == [chunk(i) for i in range(N_RESULTS)]
        totals = poll(
            lambda: (t := spill_totals(client))["unspilled"] >= held["spilled"] and t,
            what="spill reports counting the keys read back",
        )
        assert totals["spilled"] >= held["spilled"]
        [report] = memory_events(client, "spill")[:1]
        assert report["worker"] == next(iter(client.scheduler_info()["workers"]))
        assert report["memory-limit"] == 400 * MB
        assert {"rss", "managed", "spilled", "spilled-bytes-moved"} <= set(report)
        directory = held["directory"]
        assert os.path.isdir(directory)
    assert not os.path.exists(directory), "the local directory goes with the worker"


def test_past_the_spill_fraction_the_worker_spills_until_below_target():
    # 400 MB limit: results (100 MB) stay under the target (240 MB), but with 150 MB of
    # unmanaged memory the process passes the spill fraction (280 MB) and spills down
    with budgeted_client("400MB", target=0.6, spill=0.7) as client:
        futures = client.map(chunk, range(10))
        assert [f.result(timeout=30) for f in futures] == [chunk(i) for i in range(10)]
        [held] = client.run(data_on_worker).values()
        assert held["spilled"] == 0, "under the target, nothing spilled by size"
        assert held["rss"] < 280 * MB
        client.submit(hold_ballast, 150).result(timeout=30)

        def spilled() -> dict | None:
            [held] = client.run(data_on_worker).values()
            return held if held["spilled"] >= 7 else None

        held = poll(spilled, timeout=10, what="the monitor spilling at least 70 MB")
        assert len(held["files"]) == held["spilled"], "the spilled results are on disk"
        poll(lambda: spill_totals(client)["spilled"] >= held["spilled"], what="a spill report")
        assert client.gather(futures) == [chunk(i) for i in range(10)]
