"""Scheduler-side queuing, blame for deaths and exact replicas, driven by hand (no sockets)."""

from __future__ import annotations

import math

import pytest

from storied.scheduler.state import Effects, SchedulerState
from tests.scheduler.test_state import (
    CLIENT,
    computed_keys,
    finish,
    freed_keys,
    spec,
    submit,
)

W1, W2, W3 = "tcp://w1", "tcp://w2", "tcp://w3"


@pytest.fixture
def state(recorder) -> SchedulerState:
    """Dask's default saturation: 2 threads -> ceil(2.2) = 3 tasks sent at once."""
    state = SchedulerState(recorder, allowed_failures=1, worker_saturation=1.1)
    state.add_worker(W1, "w1", 2, "add-w1")
    return state


def test_root_tasks_beyond_the_slots_queue_in_priority_order(state, recorder):
    effects = submit(state, *(spec(f"r-{i}") for i in range(10)))
    assert computed_keys(effects, W1) == ["r-0", "r-1", "r-2"]
    assert {ts.key for ts in state.queued} == {f"r-{i}" for i in range(3, 10)}
    assert recorder.path("r-5") == ["released", "waiting", "queued"]
    effects = finish(state, "r-1", W1)
    assert computed_keys(effects, W1) == ["r-3"]
    assert recorder.path("r-3") == ["released", "waiting", "queued", "processing"]
    assert recorder.transitions[-1][-1] == W1


def test_user_priority_goes_first_in_the_queue(state):
    submit(state, *(spec(f"r-{i}") for i in range(5)))
    urgent = spec("urgent")._replace(options={"priority": 10})
    submit(state, urgent, stimulus_id="later")
    assert state.tasks["urgent"].state == "queued"
    effects = finish(state, "r-0", W1)
    assert computed_keys(effects, W1) == ["urgent"]


def test_an_erred_task_opens_a_slot_too(state):
    submit(state, *(spec(f"r-{i}") for i in range(5)))
    error = {"exception": b"", "traceback": None, "text": "boom"}
    effects = state.task_erred(W1, "r-2", error, "erred")
    assert computed_keys(effects, W1) == ["r-3"]


def test_a_new_worker_takes_queued_tasks(state, recorder):
    submit(state, *(spec(f"r-{i}") for i in range(10)))
    effects = state.add_worker(W2, "w2", 1, "add-w2")
    assert computed_keys(effects, W2) == ["r-3", "r-4"]
    assert len(state.queued) == 5


def test_a_lost_worker_requeues_only_its_tasks_and_the_queue_survives(state):
    state.add_worker(W2, "w2", 2, "add-w2")
    submit(state, *(spec(f"r-{i}") for i in range(20)))
    on_w1 = {ts.key for ts in state.workers[W1].processing}
    assert len(on_w1) == 3 and len(state.queued) == 14
    state.remove_worker(W1, "lost", expected=False)
    assert len(state.queued) == 17
    assert all(state.tasks[k].state == "queued" for k in on_w1)
    effects = state.add_worker(W3, "w3", 2, "add-w3")
    # the re-queued tasks keep their rank: the earliest go first
    assert computed_keys(effects, W3) == sorted(on_w1, key=lambda k: int(k[2:]))


def test_releasing_a_queued_task_forgets_it(state, recorder):
    submit(state, *(spec(f"r-{i}") for i in range(5)))
    state.client_releases_keys(CLIENT, ["r-4"], "release")
    assert "r-4" not in state.tasks
    assert recorder.path("r-4")[-3:] == ["queued", "released", "forgotten"]
    finish(state, "r-0", W1)
    finish(state, "r-1", W1)
    assert state.tasks["r-3"].state == "processing" and not state.queued


def test_tasks_with_inputs_go_to_the_holder_without_queuing(state):
    submit(state, spec("a"), spec("b", "a"), spec("c", "a"), spec("d", "a"), spec("e", "a"))
    effects = finish(state, "a", W1)
    assert sorted(computed_keys(effects, W1)) == ["b", "c", "d", "e"]
    assert not state.queued


def test_infinite_saturation_sends_everything_at_once(recorder):
    state = SchedulerState(recorder, worker_saturation=math.inf)
    state.add_worker(W1, "w1", 1, "add-w1")
    effects = submit(state, *(spec(f"r-{i}") for i in range(50)))
    assert len(computed_keys(effects, W1)) == 50


@pytest.mark.parametrize("bad", [0, -1, math.nan])
def test_saturation_must_be_positive(recorder, bad):
    with pytest.raises(ValueError, match="worker_saturation"):
        SchedulerState(recorder, worker_saturation=bad)


def test_only_executing_tasks_are_blamed_for_a_death(recorder):
    """Eager (inf saturation): 30 tasks sit on a 2-thread worker; 2 said they started."""
    state = SchedulerState(recorder, allowed_failures=0, worker_saturation=math.inf)
    state.add_worker(W1, "w1", 2, "add-w1")
    state.add_worker(W2, "w2", 2, "add-w2")
    submit(state, *(spec(f"r-{i}") for i in range(60)))
    on_w1 = sorted(state.workers[W1].processing, key=lambda ts: ts.priority)
    started = [on_w1[7], on_w1[20]]
    for ts in started:
        state.task_started(W1, ts.key)
    state.task_started(W2, on_w1[0].key)  # not its worker: ignored
    state.remove_worker(W1, "lost", expected=False)
    erred = {ts.key for ts in on_w1 if ts.state == "erred"}
    assert erred == {ts.key for ts in started}
    assert all(ts.suspicious == 0 for ts in on_w1 if ts not in started)


def test_unreported_slots_blame_the_next_tasks_in_line(recorder):
    """A task may kill its worker before the word that it started gets out."""
    state = SchedulerState(recorder, allowed_failures=0, worker_saturation=math.inf)
    state.add_worker(W1, "w1", 2, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(10)))
    state.task_started(W1, "r-5")
    state.remove_worker(W1, "lost", expected=False)
    assert {k for k, ts in state.tasks.items() if ts.state == "erred"} == {"r-5", "r-0"}


def test_a_leaving_worker_blames_nothing(state):
    submit(state, spec("r-0"))
    state.task_started(W1, "r-0")
    state.remove_worker(W1, "retired", expected=True)
    assert state.tasks["r-0"].suspicious == 0


def test_replicas_are_tracked_and_a_lost_holder_recomputes_nothing(state, recorder):
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, spec("a", "x"), spec("x"), wanted=["a"])
    finish(state, "x", W1)
    finish(state, "a", state.tasks["a"].processing_on)
    submit(state, spec("b", "a"), stimulus_id="more")
    holder = state.tasks["a"].who_has.copy()
    other = ({W1, W2} - holder).pop()
    state.add_replicas(other, ["a"], "fetched")
    assert state.tasks["a"].who_has == {W1, W2}
    state.remove_worker(holder.pop(), "lost", expected=False)
    assert state.tasks["a"].state == "memory"
    assert state.tasks["a"].who_has == {other}
    assert recorder.path("a").count("processing") == 1


def test_dropping_the_last_replica_recomputes(state, recorder):
    submit(state, spec("a"))
    finish(state, "a", W1)
    state.add_worker(W2, "w2", 1, "add-w2")
    state.add_replicas(W2, ["a"], "fetched")
    state.remove_replicas(W1, ["a"], "dropped")
    assert state.tasks["a"].who_has == {W2}
    effects = state.remove_replicas(W2, ["a"], "dropped")
    assert state.tasks["a"].state == "processing"
    assert computed_keys(effects, W1) + computed_keys(effects, W2) == ["a"]


def test_a_copy_of_a_released_key_is_freed(state):
    effects = state.add_replicas(W1, ["gone"], "fetched")
    assert freed_keys(effects, W1) == ["gone"]
    assert "gone" not in state.tasks


def test_a_copy_is_dropped_only_while_another_survives(state):
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, spec("a"))
    finish(state, "a", W1)
    assert freed_keys(state.drop_replicas(W1, ["a"], "drop"), W1) == []
    state.add_replicas(W2, ["a"], "fetched")
    assert freed_keys(state.drop_replicas(W1, ["a"], "drop"), W1) == ["a"]
    assert state.tasks["a"].who_has == {W2}
    assert state.tasks["a"] not in state.workers[W1].has_what


def test_a_seceded_task_frees_its_slot_for_the_tasks_it_waits_for(recorder):
    state = SchedulerState(recorder, worker_saturation=1.0)
    state.add_worker(W1, "w1", 1, "add-w1")
    submit(state, spec("parent"))
    effects = submit(state, spec("child-0"), spec("child-1"), stimulus_id="from-parent")
    assert computed_keys(effects, W1) == [] and len(state.queued) == 2
    effects = state.task_seceded(W1, "parent", "seceded")
    assert computed_keys(effects, W1) == ["child-0"]
    assert state.task_seceded(W2, "child-0", "not-there").workers == {}
    finish(state, "parent", W1)
    assert not state.workers[W1].long_running


def test_short_tasks_get_a_backlog_worth_a_few_milliseconds(recorder):
    """Saturation alone would make each 1 ms task wait for a round trip to the scheduler."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 2, "add-w1")
    effects = submit(state, *(spec(f"r-{i}") for i in range(100)))
    assert len(computed_keys(effects, W1)) == 3, "no durations known yet: saturation only"
    effects = state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001))
    # 2 threads x 10 ms / 1 ms = 20 more tasks than saturation's 3
    assert len(state.workers[W1].processing) == 3 + 20
    assert state.task_duration == pytest.approx(0.001)


def test_the_first_worker_to_free_a_slot_takes_only_its_share_of_the_queue(recorder):
    """Tasks of microseconds make the backlog thousands of tasks: without a cap, the first
    worker to report took the whole queue and the other idled (map ran at half speed)."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 1, "add-w1")
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, *(spec(f"r-{i}") for i in range(1000)))
    assert len(state.queued) == 996
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.000001))
    # its saturation slots (2) and half of the 996 queued (one of two threads), not all
    assert len(state.workers[W1].processing) == 2 + 498
    assert len(state.queued) == 497


def test_a_negative_backlog_is_refused(recorder):
    with pytest.raises(ValueError, match="worker_backlog"):
        SchedulerState(recorder, worker_backlog=-1)


def test_a_backlogged_worker_is_topped_up_in_one_batch_at_half_its_backlog(recorder):
    """One message per finished task cost map ~1.5x the CPU per task of no queuing: a worker
    busy with more than half its backlog is left alone, then refilled all at once."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 2, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(1000)))
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001))
    # saturation's 3 and a backlog of 2 threads x 10 ms / 1 ms = 20
    held = sorted(state.workers[W1].processing, key=lambda ts: int(ts.key[2:]))
    assert len(held) == 3 + 20
    for ts in held[:9]:
        assert computed_keys(finish(state, ts.key, W1), W1) == [], "more than half left"
    effects = finish(state, held[9].key, W1)
    assert len(computed_keys(effects, W1)) == 10, "half the backlog run: filled in one go"
    assert len(state.workers[W1].processing) == 3 + 20


def test_without_a_backlog_every_free_slot_is_filled_at_once(recorder):
    """Dask's limit: a finished task's slot takes the next queued task in the same stimulus."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.0)
    state.add_worker(W1, "w1", 2, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(100)))
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001))
    for key in ("r-1", "r-2", "r-3"):
        assert len(computed_keys(finish(state, key, W1), W1)) == 1
        assert len(state.workers[W1].processing) == 3


def test_a_later_root_does_not_overtake_the_queue_while_a_worker_waits_to_be_filled(recorder):
    """A worker with free slots but more than half its backlog left takes no new root task:
    it queues behind the earlier ones, which go first when the worker is filled."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 2, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(1000)))
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001))
    held = sorted(state.workers[W1].processing, key=lambda ts: int(ts.key[2:]))
    for ts in held[:5]:
        finish(state, ts.key, W1)
    effects = submit(state, spec("late"), stimulus_id="update-graph-2")
    assert computed_keys(effects, W1) == []
    assert state.tasks["late"].state == "queued"
    for ts in held[5:10]:
        effects = finish(state, ts.key, W1)
    assert "late" not in computed_keys(effects, W1)
    assert state.tasks["late"].state == "queued"


def test_once_a_root_queues_the_later_ones_of_its_graph_queue_behind_it(recorder):
    """As the queue grows, so does a worker's backlog (its share of the queue): the later
    roots of one submit must not go straight to the worker, ahead of the earlier queued."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 1, "add-w1")
    submit(state, spec("warm-up"))
    state.task_finished(W1, "warm-up", 8, "int", "done", startstops=(1.0, 1.001))
    effects = submit(state, *(spec(f"r-{i}") for i in range(30)), stimulus_id="update-graph-2")
    # saturation's 2 and the backlog: 1 thread x 10 ms / 1 ms = 10, in priority order
    assert computed_keys(effects, W1) == [f"r-{i}" for i in range(12)]
    for i in range(4):
        assert computed_keys(finish(state, f"r-{i}", W1), W1) == [], "more than half left"
    effects = finish(state, "r-4", W1)
    assert computed_keys(effects, W1) == [f"r-{i}" for i in range(12, 17)]


def map_on_two_warm_workers(recorder, backlog: float) -> tuple[SchedulerState, Effects]:
    """Two one-thread workers that know tasks take 1 ms, then a map of 100 roots: the
    state, and what the map's submission sent."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=backlog)
    state.add_worker(W1, "w1", 1, "add-w1")
    state.add_worker(W2, "w2", 1, "add-w2")
    submit(state, spec("warm-up"))
    state.task_finished(W1, "warm-up", 8, "int", "done", startstops=(1.0, 1.001))
    effects = submit(state, *(spec(f"r-{i}") for i in range(100)), stimulus_id="update-graph-2")
    return state, effects


def test_a_graph_of_roots_sends_each_worker_its_backlog_at_once(recorder):
    """The backlog is a share of the queue, which is empty when a graph's first roots go out:
    the workers that took them are filled at the end of the same stimulus, not a round trip
    later, when they have run their first tasks and wait (a fresh map idled ~20 ms so)."""
    state, effects = map_on_two_warm_workers(recorder, backlog=0.01)
    # each: saturation's 2 and a backlog of 1 thread x 10 ms / 1 ms = 10
    assert len(computed_keys(effects, W1)) == len(computed_keys(effects, W2)) == 12
    assert len(state.queued) == 100 - 24
    sent = sorted(computed_keys(effects, W1) + computed_keys(effects, W2), key=lambda k: int(k[2:]))
    assert sent == [f"r-{i}" for i in range(24)], "the queue's first, in priority order"


def test_without_a_backlog_a_graph_of_roots_fills_only_the_slots(recorder):
    """Dask's limit: saturation x threads at once, however many roots queue behind."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.0)
    state.add_worker(W1, "w1", 1, "add-w1")
    submit(state, spec("warm-up"))
    state.task_finished(W1, "warm-up", 8, "int", "done", startstops=(1.0, 1.001))
    effects = submit(state, *(spec(f"r-{i}") for i in range(100)), stimulus_id="update-graph-2")
    assert computed_keys(effects, W1) == ["r-0", "r-1"]
    assert len(state.queued) == 98


def test_a_root_that_had_no_worker_joins_the_back_of_the_queue_when_one_runs(state, recorder):
    """While others queue, a root task is queued without choosing a worker; one waiting for
    a worker (all paused) stops being unrunnable as it joins the queue."""
    submit(state, *(spec(f"r-{i}") for i in range(5)))
    state.set_worker_status(W1, "paused", "pause")
    submit(state, spec("late"), stimulus_id="update-graph-2")
    assert state.tasks["late"].state == "no-worker"
    state.set_worker_status(W1, "running", "resume")
    late = state.tasks["late"]
    assert late.state == "queued" and late not in state.unrunnable
    assert "late" not in state.no_worker_reasons
    assert recorder.path("late") == ["released", "waiting", "no-worker", "queued"]
    sent = [computed_keys(finish(state, key, W1), W1) for key in ("r-0", "r-1", "r-2")]
    assert sent == [["r-3"], ["r-4"], ["late"]]


def test_the_backlog_stretches_to_cover_late_reports(recorder):
    """A worker topped up at half its backlog runs dry if its reports reach the scheduler
    later than that half lasts (a busy or collecting scheduler): the backlog covers twice
    the longest recent delay. Measured on map(10,000) of no-op tasks, workers idled 100-600
    ms at a time until their top-up came."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.01)
    state.add_worker(W1, "w1", 1, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(1000)))
    # reported at once (its clock's offset is 5 s): a backlog of 10 ms / 1 ms = 10
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001), now=6.001)
    assert len(state.workers[W1].processing) == 2 + 10
    # heard of 50 ms late: 2 x 50 ms / 1 ms = 100, sent at once
    effects = state.task_finished(W1, "r-1", 8, "int", "d", startstops=(1.002, 1.003), now=6.053)
    assert len(computed_keys(effects, W1)) == 100 - 10 + 1
    assert len(state.workers[W1].processing) == 2 + 100


def test_without_a_backlog_late_reports_change_nothing(recorder):
    """``worker-backlog: 0`` is Dask's limit, however late the reports."""
    state = SchedulerState(recorder, worker_saturation=1.1, worker_backlog=0.0)
    state.add_worker(W1, "w1", 1, "add-w1")
    submit(state, *(spec(f"r-{i}") for i in range(100)))
    state.task_finished(W1, "r-0", 8, "int", "done", startstops=(1.0, 1.001), now=1.002)
    state.task_finished(W1, "r-1", 8, "int", "d", startstops=(1.002, 1.003), now=1.5)
    assert len(state.workers[W1].processing) == 2


def test_each_worker_takes_its_share_of_the_work_queued_and_held(recorder):
    """The share is of the whole work, not of what is left in the queue: with a share of
    the queue alone the second worker got half of what the first left, and the rest went
    out in ever smaller top-ups (a quarter, an eighth, ...), each a round trip late."""
    state, effects = map_on_two_warm_workers(recorder, backlog=1.0)
    assert len(computed_keys(effects, W1)) == len(computed_keys(effects, W2)) == 50
    assert not state.queued
