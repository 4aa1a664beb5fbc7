"""Large data over real TCP between processes: no size ceiling, bounded memory, clear failures."""

from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any

import numpy as np
import psutil
import pytest

from storied import Client, LocalCluster, config, wait
from storied.comm.core import FrameTooLarge

MiB = 2**20


def make_bytes(n: int) -> bytes:
    return b"r" * n


def make_array(n: int) -> np.ndarray:
    return np.full(n, 7, dtype="u1")


def nbytes_of(value) -> int:
    return len(value) if isinstance(value, bytes) else int(value.nbytes)


def first_and_last(array: np.ndarray) -> tuple[int, int, int]:
    return int(array[0]), int(array[-1]), int(array.nbytes)


def _two_workers(client: Client) -> list[str]:
    client.wait_for_workers(2)
    return sorted(client.scheduler_info()["workers"])


def test_a_300_mib_argument_result_and_scatter_succeed(client):
    size = 300 * MiB
    assert client.submit(len, b"x" * size).result(timeout=30) == size
    result = client.submit(make_bytes, size).result(timeout=30)
    assert len(result) == size and result[:1] == b"r" and result[-1:] == b"r"
    del result
    scattered = client.scatter(b"s" * size)
    assert client.submit(nbytes_of, scattered).result(timeout=30) == size


def test_a_300_mib_array_moves_worker_to_worker(client):
    a, b = _two_workers(client)
    made = client.submit(make_array, 300 * MiB, workers=[a], pure=False)
    used = client.submit(first_and_last, made, workers=[b])
    assert used.result(timeout=30) == (7, 7, 300 * MiB)


class _PeakRSS:
    """Samples a process's resident memory in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _worker_pids(client: Client) -> dict[str, int]:
    return client.run(os.getpid)


def test_a_1_gib_transfer_holds_at_most_1_25x_the_payload_on_each_side(client):
    size = 1024 * MiB
    a, b = _two_workers(client)
    pids = _worker_pids(client)
    client.run(_collect)
    baseline = {w: psutil.Process(pids[w]).memory_info().rss for w in (a, b)}
    samplers = {w: _PeakRSS(pids[w]) for w in (a, b)}
    made = client.submit(make_array, size, workers=[a], pure=False)
    used = client.submit(first_and_last, made, workers=[b])
    assert used.result(timeout=60) == (7, 7, size)
    peaks = {w: samplers[w].stop() for w in (a, b)}
    for worker in (a, b):
        grew = peaks[worker] - baseline[worker]
        assert grew <= 1.25 * size, f"{worker} grew by {grew / MiB:.0f} MiB for a 1 GiB transfer"
    del made, used


def test_a_1_gib_gather_holds_at_most_1_25x_the_payload_on_each_side(client):
    """The client receives straight into the array's final memory: no second copy."""
    size = 1024 * MiB
    a, _ = _two_workers(client)
    made = client.submit(make_array, size, workers=[a], pure=False)
    wait([made], timeout=60)
    client.run(_collect)
    sender = psutil.Process(_worker_pids(client)[a])
    here = psutil.Process()
    baseline = {"worker": sender.memory_info().rss, "client": here.memory_info().rss}
    samplers = {"worker": _PeakRSS(sender.pid), "client": _PeakRSS(here.pid)}
    value = made.result(timeout=60)
    peaks = {side: sampler.stop() for side, sampler in samplers.items()}
    assert first_and_last(value) == (7, 7, size) and value.flags.writeable
    for side, peak in peaks.items():
        grew = peak - baseline[side]
        assert grew <= 1.25 * size, f"the {side} grew by {grew / MiB:.0f} MiB for 1 GiB"
    del value, made


def _collect() -> None:
    import gc

    gc.collect()


class RefusesToLiveElsewhere:
    """Unpickles only in the process that made it, like an object bound to local resources."""

    def __init__(self) -> None:
        import os

        self.home = os.getpid()

    def __setstate__(self, state: dict) -> None:
        import os

        if state["home"] != os.getpid():
            raise RuntimeError("this object cannot be unpickled away from its home process")
        self.__dict__.update(state)


def make_homebound() -> RefusesToLiveElsewhere:
    return RefusesToLiveElsewhere()


def identity(x):
    return x


def test_a_dependency_that_cannot_be_unpickled_fails_its_dependent_with_the_original_error(
    client,
):
    a, b = _two_workers(client)
    made = client.submit(make_homebound, workers=[a], pure=False)
    wait([made])
    used = client.submit(identity, made, workers=[b])
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot be unpickled away from its home") as info:
        used.result(timeout=20)
    assert time.monotonic() - started < 10
    assert "__setstate__" in "".join(traceback.format_tb(info.value.__traceback__))
    assert used.status == "error"
    events = [msg for _, msg in client.get_events("transfer")]
    assert any(e["action"] == "unpickle-failed" and e["key"] == made.key for e in events)
    erred = [msg for _, msg in client.get_events("erred") if msg["key"] == used.key]
    assert erred and "cannot be unpickled" in erred[-1]["exception"]


def big_reply() -> bytes:
    return b"y" * (200 * 1024)


def test_an_oversized_control_message_is_refused_at_the_sender_naming_the_setting():
    with (
        config.set({"comm.max-frame-size": "64KiB"}),
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(FrameTooLarge, match=r"exceeds comm\.max-frame-size \(65536 bytes\)"):
            client.run_on_scheduler(big_reply)
        # data is not bound by the limit, and the connection still works
        assert len(client.submit(make_bytes, 300 * 1024).result(timeout=10)) == 300 * 1024
        assert client.submit(len, b"q" * 300 * 1024).result(timeout=10) == 300 * 1024


def _scatter_then_sum(client: Any) -> tuple[float, float]:
    """Dask's documented scatter example (futures.rst), with a 80 MB array."""
    x = np.linspace(0, 1, 10_000_000)
    [future] = client.scatter([x])
    total = client.submit(np.sum, future).result(timeout=30)
    back = client.submit(np.multiply, future, 2).result(timeout=30)
    return float(total), float(back[-1])


def test_scatter_and_large_results_behave_as_on_dask(client, dask_client):
    ours = _scatter_then_sum(client)
    theirs = _scatter_then_sum(dask_client)
    assert ours == theirs
    assert ours == pytest.approx((5_000_000.0, 2.0))


def test_large_values_travel_through_datasets_and_collection_graphs(client):
    """Values the scheduler holds for others (a published dataset, a graph with an array
    embedded in it) are data too: out of band, beyond the frame limit's reach."""
    import dask.array as da

    big = np.arange(40_000_000, dtype="i8")  # 320 MB, above comm.max-frame-size
    client.publish_dataset(wire_big=big)
    try:
        assert np.array_equal(client.get_dataset("wire_big"), big)
    finally:
        client.unpublish_dataset("wire_big")
    embedded = da.from_array(big, chunks=10_000_000)
    assert int(client.compute(embedded.sum()).result(timeout=60)) == int(big.sum())
