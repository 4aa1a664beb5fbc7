"""Cancelling a task cancels its dependents, transitively, as Dask's scheduler does: those
nobody else wants, or with ``force`` all of them, for every client (pure state machine)."""

from __future__ import annotations

from storied.scheduler.state import FIRE_AND_FORGET, Effects, SchedulerState

from .test_state import CLIENT, finish, freed_keys, spec, submit

OTHER = "client-2"


def cancelled_keys_sent(effects: Effects, client: str) -> list[dict]:
    return [m for m in effects.clients[client] if m["op"] == "cancelled-keys"]


def test_a_chain_of_dependents_is_cancelled_with_its_root(one_worker, recorder):
    submit(one_worker, spec("x"), spec("y", "x"), spec("z", "y"))
    effects = one_worker.cancel(CLIENT, ["x"], "cancel-1")
    assert cancelled_keys_sent(effects, CLIENT) == [
        {"op": "cancelled-keys", "keys": ["x"], "dependents": ["y", "z"], "stimulus_id": "cancel-1"}
    ]
    assert not one_worker.tasks, "nothing is left of the chain"
    assert freed_keys(effects, "tcp://w1") == ["x"]
    assert not one_worker.workers["tcp://w1"].processing
    for key in "xyz":
        assert recorder.path(key)[-1] == "forgotten"
        cancel_steps = [t for t in recorder.transitions if t[0] == key and t[4] == "cancel-1"]
        assert cancel_steps, f"the cancel's stimulus id is in the story of {key}"
    (event,) = [msg for topic, msg in effects.events if topic == CLIENT]
    assert event["action"] == "cancel"
    assert event["keys"] == ["x"] and event["dependents"] == ["y", "z"]
    assert event["force"] is False and event["stimulus_id"] == "cancel-1"


def test_dependents_of_a_finished_task_are_cancelled_finished_or_not(two_workers):
    submit(two_workers, spec("x"), spec("y", "x"), spec("w", "x"))
    finish(two_workers, "x", two_workers.tasks["x"].processing_on)
    finish(two_workers, "y", two_workers.tasks["y"].processing_on)
    assert two_workers.tasks["w"].state == "processing"
    effects = two_workers.cancel(CLIENT, ["x"], "cancel-1")
    (answer,) = cancelled_keys_sent(effects, CLIENT)
    assert sorted(answer["dependents"]) == ["w", "y"]
    assert not two_workers.tasks
    freed = freed_keys(effects, "tcp://w1") + freed_keys(effects, "tcp://w2")
    assert sorted(freed) == ["w", "x", "y"], "the workers let go of results and running tasks"


def test_a_dependent_another_client_wants_survives_without_force(one_worker):
    submit(one_worker, spec("x"), spec("y", "x"))
    submit(one_worker, spec("x"), spec("z", "x"), wanted=["z"], client=OTHER)
    submit(one_worker, spec("u", "z"))
    effects = one_worker.cancel(CLIENT, ["x"], "cancel-1")
    (answer,) = cancelled_keys_sent(effects, CLIENT)
    assert answer["dependents"] == ["y"], "z is the other client's, and u is beyond it"
    assert not cancelled_keys_sent(effects, OTHER)
    assert "y" not in one_worker.tasks
    assert {"x", "z", "u"} <= set(one_worker.tasks), "x is still needed for z"
    assert one_worker.tasks["z"].who_wants == {OTHER}


def test_force_cancels_for_every_client_and_tells_them(one_worker):
    submit(one_worker, spec("x"), spec("y", "x"))
    submit(one_worker, spec("x"), spec("y", "x"), spec("z", "y"), wanted=["y", "z"], client=OTHER)
    one_worker.fire_and_forget(["z"], "fire")
    effects = one_worker.cancel(CLIENT, ["x"], "cancel-1", force=True)
    (answer,) = cancelled_keys_sent(effects, CLIENT)
    assert answer["dependents"] == ["y", "z"]
    assert cancelled_keys_sent(effects, OTHER) == [
        {"op": "cancelled-keys", "keys": ["y", "z"], "stimulus_id": "cancel-1"}
    ]
    assert FIRE_AND_FORGET not in effects.clients
    assert not one_worker.tasks


def test_without_force_a_key_another_client_wants_cancels_nothing_beyond_it(one_worker):
    submit(one_worker, spec("x"), spec("y", "x"))
    submit(one_worker, spec("x"), client=OTHER)
    effects = one_worker.cancel(CLIENT, ["x"], "cancel-1")
    (answer,) = cancelled_keys_sent(effects, CLIENT)
    assert answer["dependents"] == [], "as Dask: x is not cancelled, so neither is y"
    assert one_worker.tasks["x"].who_wants == {OTHER}
    assert one_worker.tasks["y"].who_wants == {CLIENT}


def test_an_intermediate_nobody_wants_is_cancelled_with_the_rest(one_worker: SchedulerState):
    submit(one_worker, spec("x"), spec("y", "x"), spec("z", "y"), wanted=["x", "z"])
    effects = one_worker.cancel(CLIENT, ["x"], "cancel-1")
    (answer,) = cancelled_keys_sent(effects, CLIENT)
    assert answer["dependents"] == ["y", "z"]
    assert not one_worker.tasks
