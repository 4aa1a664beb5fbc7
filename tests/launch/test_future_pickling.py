"""Futures pickled inside closures and structures rebuild on the other side, bound to the
client there; futures passed as task arguments still travel as references."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import pytest

from storied import Client, Future, get_client, get_worker
from tests.engine.helpers import inc, poll


def test_client_run_can_read_the_key_of_a_closed_over_future(client):
    future = client.submit(inc, 1)
    keys = client.run(lambda: future.key)
    assert set(keys.values()) == {future.key}
    assert len(keys) == 2


def test_a_task_closing_over_a_future_waits_for_it_on_the_worker(client):
    future = client.submit(inc, 41)
    later = client.submit(lambda: future.result() + 1)
    assert later.result(timeout=30) == 43


def test_the_rebuilt_future_is_bound_to_the_workers_client(client):
    future = client.submit(inc, 1)

    def owner():
        return future.client.id, get_client().id, get_worker().address

    bound_to, worker_client_id, _ = client.submit(owner).result(timeout=30)
    assert bound_to == worker_client_id != client.id


def test_futures_as_task_arguments_still_travel_as_references(client):
    future = client.submit(inc, 1)
    nested = client.submit(lambda xs: [type(x).__name__ for x in xs["a"]], {"a": [future]})
    assert nested.result(timeout=30) == ["int"]
    total = client.submit(lambda xs: sum(xs), [future, future])
    assert total.result(timeout=30) == 4
    assert client.cluster.scheduler.tasks[total.key].dependencies == {
        client.cluster.scheduler.tasks[future.key]
    }


def test_unpickled_here_a_future_binds_to_the_default_or_current_client(cluster, client):
    future = client.submit(inc, 10)
    payload = cloudpickle.dumps([future])
    [copy] = cloudpickle.loads(payload)
    assert copy is not future and copy.key == future.key
    assert copy.result(timeout=30) == 11
    assert copy.client is client
    with Client(cluster, set_as_default=False) as other:
        with other.as_current():
            [bound_elsewhere] = cloudpickle.loads(payload)
            assert bound_elsewhere.result(timeout=30) == 11
        assert bound_elsewhere.client is other
        # the other client wants the key too: it stays while either holds a future of it
        del future, copy
        assert bound_elsewhere.result(timeout=30) == 11


def test_an_unbound_future_shows_its_key_without_binding(client):
    future = Future("some-key")
    assert repr(future) == "<Future: unbound, key: some-key>"
    future.release()  # holds nothing: nothing to release


def test_release_lets_the_cluster_forget_the_key_once(cluster, client):
    future = client.submit(inc, 123, pure=False)
    assert future.result(timeout=30) == 124
    twin = Future(future.key, client)
    future.release()
    future.release()  # a second release does nothing: the twin still holds the key
    assert future.key in cluster.scheduler.tasks
    assert future.status == "finished"
    twin.release()
    poll(lambda: future.key not in cluster.scheduler.tasks, what="the key was forgotten")


def test_a_future_of_a_key_the_scheduler_forgot_is_lost(client):
    orphan = cloudpickle.loads(cloudpickle.dumps(Future("never-submitted-key")))
    with pytest.raises(Exception, match="lost"):
        orphan.result(timeout=30)


def test_a_future_unpickled_where_no_client_is_in_charge_says_so(client):
    payload = cloudpickle.dumps(client.submit(inc, 1))
    program = (
        "import sys, cloudpickle\n"
        "future = cloudpickle.loads(sys.stdin.buffer.read())\n"
        "print(future.key)\n"
        "try:\n"
        "    future.result()\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], input=payload, capture_output=True, timeout=60
    )
    key, message = done.stdout.decode().splitlines()[:2]
    assert key.startswith("inc-")
    assert "no client is in charge here" in message
