"""A worker past its pause fraction starts no new tasks until its memory falls (item 7)."""

from __future__ import annotations

from engine.helpers import inc, poll

from storied import Worker, get_worker, wait
from storied.scheduler.server import Scheduler

from .helpers import MB, budgeted_client, memory_events


def hold_ballast(megabytes: int) -> int:
    get_worker().ballast = b"x" * (megabytes * MB)
    return megabytes


def drop_ballast(dask_worker: Worker) -> None:
    del dask_worker.ballast


def task_states(dask_worker: Worker) -> dict[str, str]:
    return {key: ts.state for key, ts in dask_worker.state.tasks.items()}


def scheduler_state_of(key: str, dask_scheduler: Scheduler) -> str:
    return dask_scheduler.state.tasks[key].state


def test_a_paused_worker_starts_no_new_tasks_and_resumes_when_memory_falls():
    # 400 MB limit, pause at 0.5: 200 MB of memory held by a task pauses the worker
    with budgeted_client("400MB", pause=0.5) as client:
        earlier = client.submit(bytes, 100_000)
        wait([earlier], timeout=30)
        assert client.submit(hold_ballast, 200).result(timeout=30) == 200
        [paused] = poll(lambda: memory_events(client, "pause"), what="a pause event")
        assert paused["rss"] > 200 * MB
        assert paused["memory-limit"] == 400 * MB
        assert any(msg.get("action") == "pause" for _, msg in client.get_events("all"))

        waiting = client.submit(inc, 1)
        # as Dask: a paused worker is sent no new tasks; with no other, the task waits here
        poll(
            lambda: client.run_on_scheduler(scheduler_state_of, waiting.key) == "no-worker",
            what="the task waiting on the scheduler",
        )
        assert waiting.key not in next(iter(client.run(task_states).values()))
        assert not waiting.done(), "nothing starts while the worker is paused"
        assert earlier.result(timeout=10) == bytes(100_000), "a paused worker still serves data"

        client.run(drop_ballast)
        assert waiting.result(timeout=10) == 2
        [unpaused] = poll(lambda: memory_events(client, "unpause"), what="an unpause event")
        assert unpaused["rss"] <= 200 * MB
        [story] = client.run(lambda dask_worker: dask_worker.story(waiting.key)).values()
        [started] = [stimulus for _, _, finish, _, stimulus, _ in story if finish == "executing"]
        assert started.startswith("unpause-"), "it was the unpause that started it"
