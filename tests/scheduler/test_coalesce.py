"""The free-keys messages of a batch to a worker, merged where the order allows."""

from __future__ import annotations

from typing import Any

from storied.scheduler.coalesce import coalesce_free_keys


def free(*keys: str, stimulus_id: str) -> dict[str, Any]:
    return {"op": "free-keys", "keys": list(keys), "stimulus_id": stimulus_id}


def compute(key: str, *inputs: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"op": "compute-task", "key": key, "stimulus_id": f"s-{key}"}
    if inputs:
        msg["who_has"] = {name: ["tcp://w"] for name in inputs}
    return msg


def test_free_keys_of_several_stimuli_become_one_message_keeping_each_stimulus():
    batch = [free("a", stimulus_id="s1"), compute("x"), free("b", "c", stimulus_id="s2")]
    assert coalesce_free_keys(batch) == [
        {
            "op": "free-keys",
            "keys": ["a", "b", "c"],
            "stimulus_id": "s1",
            "stimulus_ids": ["s1", "s2", "s2"],
        },
        compute("x"),
    ]
    assert batch[0] == free("a", stimulus_id="s1"), "the original message is not changed"


def test_a_release_does_not_move_before_a_message_naming_its_key():
    # freed after the task that needs it was sent: moving the release first would drop an
    # input that compute-task y still waits for
    batch = [free("a", stimulus_id="s1"), compute("y", "b"), free("b", stimulus_id="s2")]
    assert coalesce_free_keys(batch) == batch
    # nor before a compute-task of the key itself (freed, then assigned again)
    batch = [free("a", stimulus_id="s1"), compute("b"), free("b", stimulus_id="s2")]
    assert coalesce_free_keys(batch) == batch


def test_later_releases_merge_into_the_release_after_the_message_that_stopped_them():
    batch = [
        free("a", stimulus_id="s1"),
        compute("b"),
        free("b", stimulus_id="s2"),
        free("c", stimulus_id="s3"),
    ]
    assert coalesce_free_keys(batch) == [
        free("a", stimulus_id="s1"),
        compute("b"),
        {"op": "free-keys", "keys": ["b", "c"], "stimulus_id": "s2", "stimulus_ids": ["s2", "s3"]},
    ]


def test_a_message_of_another_kind_stops_merging():
    batch = [free("a", stimulus_id="s1"), {"op": "close"}, free("b", stimulus_id="s2")]
    assert coalesce_free_keys(batch) == batch


def test_a_batch_with_one_release_is_returned_as_it_is():
    batch = [compute("x"), free("a", stimulus_id="s1")]
    assert coalesce_free_keys(batch) is batch
