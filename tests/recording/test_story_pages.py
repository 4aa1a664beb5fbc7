"""``client.story`` reads a durable scheduler's story in pages: the same story as one read,
however small the pages; the scheduler's own transitions and its workers' both."""

from __future__ import annotations

import pytest

from storied import Client, LocalCluster, config

from .helpers import inc


@pytest.mark.parametrize("durable", [False, True])
def test_a_story_read_in_small_pages_is_the_whole_story(tmp_path, durable):
    with (
        LocalCluster(
            n_workers=2,
            processes=False,
            dashboard_address=None,
            ledger=tmp_path / "story.db" if durable else None,
        ) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(inc, range(40))
        assert client.gather(futures) == list(range(1, 41))
        keys = [f.key for f in futures]
        whole = client.story(*keys)
        with config.set({"events.page-size": 7}):
            paged = client.story(*keys)
        assert paged == whole
        assert len(whole) >= 40 * 4  # released..memory on the scheduler, more on workers
        assert {entry.where for entry in whole} > {"scheduler"}  # workers' too
        assert {entry.key for entry in whole} == set(keys)
        stamps = [entry.timestamp for entry in whole]
        assert stamps == sorted(stamps)
        if durable:
            record = cluster.scheduler.record
            assert len(whole) == len(record.story_records(*keys))
            first = record.story_page(*keys, limit=5)
            assert first == record.story_records(*keys)[-5:]
