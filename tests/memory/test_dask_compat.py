"""The same user code against storied and dask.distributed, with only the import changed: a
worker with a memory limit spills results to disk and gives them back, and a task that
allocates without bound gets its worker restarted and ends in KilledWorker."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from engine.helpers import poll

from storied import config

from .helpers import CHUNK, allocate_without_bound, chunk


def spilled_keys(dask_worker) -> int:
    return len(dask_worker.data.slow)


@contextmanager
def configured(library: str) -> Iterator[None]:
    """Results past 0.2 of the limit spill; a lost task is not tried again."""
    settings = {"worker.memory.target": 0.2, "scheduler.allowed-failures": 0}
    if library == "storied":
        with config.set(settings):
            yield
    else:
        import dask

        with dask.config.set({f"distributed.{key}": value for key, value in settings.items()}):
            yield


@pytest.mark.parametrize("library", ["storied", "dask.distributed"])
def test_memory_limits_behave_as_in_dask_with_only_the_import_changed(library, tmp_path):
    lib = importlib.import_module(library)
    with (
        configured(library),
        lib.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            memory_limit="400MB",
            dashboard_address=":0",
        ) as cluster,
        lib.Client(cluster) as client,
    ):
        [before] = client.scheduler_info()["workers"].values()
        assert before["memory_limit"] == 400_000_000
        futures = client.map(chunk, range(15))
        lib.wait(futures, timeout=30)
        [spilled] = client.run(spilled_keys).values()
        assert spilled >= 15 - 80_000_000 // CHUNK
        assert client.gather(futures) == [chunk(i) for i in range(15)]
        del futures

        runaway = client.submit(allocate_without_bound, str(tmp_path / "attempts"))
        with pytest.raises(lib.KilledWorker):
            runaway.result(timeout=60)
        [after] = poll(lambda: list(client.scheduler_info()["workers"].values()), timeout=30)
        assert after["name"] == before["name"]
        assert after["nanny"] == before["nanny"]
