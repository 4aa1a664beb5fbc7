"""Closing a worker whose task is still running: the wait for the task's thread does not hold
the event loop (a task may need the loop to end: here it waits for a cluster ``Event``)."""

from __future__ import annotations

import asyncio
import threading

from storied import Client, Event, LocalCluster


def wait_for_release() -> bool:
    Event("started").set()
    return Event("release").wait(20)


def test_close_waits_for_a_running_task_off_the_loop() -> None:
    earlier = set(threading.enumerate())  # other tests' clusters may have left task threads

    async def main() -> tuple[float, list[threading.Thread]]:
        async with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, asynchronous=True
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            loop = asyncio.get_running_loop()
            future = client.submit(wait_for_release, pure=False)
            started = Event("started", client=client)
            deadline = loop.time() + 20
            while not await started.is_set():
                assert loop.time() < deadline, "the task never started"
                await asyncio.sleep(0.01)
            threads = [
                t
                for t in threading.enumerate()
                if t.name.startswith("storied-task-") and t not in earlier
            ]
            [worker] = cluster.workers.values()
            began = loop.time()
            closing = asyncio.ensure_future(worker.close(task_wait=10))  # type: ignore[union-attr]
            # the task ends only once this reaches the scheduler: a held loop waits task_wait
            await Event("release", client=client).set()
            await closing
            del future
            return loop.time() - began, threads

    took, threads = asyncio.run(main())
    assert took < 5, f"close took {took:.1f} s: it held the loop while the task waited on it"
    assert threads and not any(t.is_alive() for t in threads)
