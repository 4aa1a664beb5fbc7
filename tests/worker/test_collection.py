"""A worker process leaves the objects it built to start out of garbage collection, so full
collections (one with each large batch of tasks) do not go through them every time."""

from __future__ import annotations

import gc

from storied import Client


def frozen_objects() -> int:
    return gc.get_freeze_count()


def test_a_worker_process_freezes_its_start_up_objects(client: Client) -> None:
    frozen = client.run(frozen_objects)
    assert len(frozen) == 2
    # storied and its dependencies alone make tens of thousands
    assert all(count > 10_000 for count in frozen.values()), frozen
    assert frozen_objects() == 0, "the client's own process is left alone"
