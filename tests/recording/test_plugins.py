"""Scheduler and worker plugins over a real cluster (issue 3, point 4): every hook with its
documented arguments, async hooks, failures, idempotence, unregistering, late workers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from engine.helpers import poll

from storied import Client, LocalCluster

from .helpers import (
    AsyncHookRecorder,
    CountingSchedulerPlugin,
    Exploder,
    HookRecorder,
    TransitionWatcher,
    WorkerExploder,
    fail,
    inc,
    plugin_state,
    small_cluster,
    unique,
)


def recorder_on(cluster: LocalCluster, name: str) -> Any:
    """The scheduler's own copy of a registered plugin (the scheduler lives in this process)."""
    return cluster.scheduler.plugins[name]


@pytest.mark.parametrize("plugin_type", [HookRecorder, AsyncHookRecorder])
def test_every_scheduler_plugin_hook_gets_its_documented_arguments(plugin_type):
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        s = cluster.scheduler
        [first_worker] = s.workers
        assert client.register_plugin(plugin_type()) == plugin_type.name
        plugin = recorder_on(cluster, plugin_type.name)
        poll(lambda: plugin.hooks("start"), what="start hook")
        assert plugin.hooks("start") == [(s,)]

        good = client.submit(inc, 1)
        bad = client.submit(fail, 2)
        assert good.result(timeout=10) == 2
        bad.exception(timeout=10)
        # the client may coalesce both submits into one graph, or not
        graphs = poll(
            lambda: (
                (calls := plugin.hooks("update_graph"))
                and set().union(*(keys for _, _, keys, _, _ in calls)) == {good.key, bad.key}
                and calls
            ),
            what="update_graph hooks for both tasks",
        )
        for scheduler, client_id, keys, tasks, extra in graphs:
            assert (scheduler, client_id) == (s, client.id)
            assert sorted(tasks) == sorted(keys)
            assert extra["stimulus_id"].startswith("update-graph-")

        transitions = {
            (key, start, finish): rest for key, start, finish, *rest in plugin.hooks("transition")
        }
        args, stimulus_id, info = transitions[(good.key, "processing", "memory")]
        assert args == ()
        assert stimulus_id.startswith("task-finished-")
        assert info["worker"] == first_worker
        assert info["duration"] >= 0
        assert info["duration"] == pytest.approx(info["startstops"][1] - info["startstops"][0])
        args, stimulus_id, info = transitions[(bad.key, "processing", "erred")]
        assert stimulus_id.startswith("task-erred-")
        assert info["worker"] == first_worker
        assert info["exception"].startswith("ZeroDivisionError: cannot handle 2")
        _, stimulus_id, _ = transitions[(good.key, "released", "waiting")]
        assert stimulus_id.startswith("update-graph-")

        cluster.scale(2)
        [second_worker] = set(s.workers) - {first_worker}
        poll(lambda: plugin.hooks("add_worker"), what="add_worker hook")
        assert plugin.hooks("add_worker") == [(s, second_worker)]
        cluster.scale(1)
        poll(lambda: plugin.hooks("remove_worker"), what="remove_worker hook")
        [(scheduler, worker, stimulus_id, extra)] = plugin.hooks("remove_worker")
        assert (scheduler, worker) == (s, second_worker)
        assert stimulus_id.startswith("worker-left-")
        assert extra["reason"] == "worker-close"

        with Client(cluster) as visitor:
            visitor_id = visitor.id
            poll(lambda: plugin.hooks("add_client"), what="add_client hook")
        poll(lambda: plugin.hooks("remove_client"), what="remove_client hook")
        assert plugin.hooks("add_client") == [(s, visitor_id)]
        assert plugin.hooks("remove_client") == [(s, visitor_id)]

        topics = [unique("a"), unique("b")]
        client.log_event(topics, {"n": 1})
        poll(lambda: client.get_events(topics[1]), what="event logged")
        assert [call for call in plugin.hooks("log_event") if call[0] in topics] == [
            (topics[0], {"n": 1}),
            (topics[1], {"n": 1}),
        ]

        assert plugin.hooks("close") == []
        client.unregister_scheduler_plugin(plugin_type.name)
        assert plugin.hooks("close") == [()]
        assert plugin_type.name not in s.plugins
        seen = len(plugin.calls)
        client.submit(inc, 3).result(timeout=10)
        assert len(plugin.calls) == seen


def test_a_scheduler_plugin_closes_with_the_scheduler():
    with small_cluster(n_workers=0) as cluster, Client(cluster) as client:
        client.register_plugin(AsyncHookRecorder())
        plugin = recorder_on(cluster, AsyncHookRecorder.name)
    assert plugin.hooks("close") == [()]


#: start is not here: a plugin whose start raises is refused (test_plugin_hygiene.py)
HOOK_TRIGGERS = ["update_graph", "transition", "add_client", "remove_client", "log_event"]


@pytest.mark.parametrize("hook", HOOK_TRIGGERS)
def test_a_plugin_that_raises_is_logged_with_its_name_and_the_cluster_keeps_working(
    cluster, client, hook
):
    client.register_plugin(Exploder(hook))
    try:
        with Client(cluster) as visitor:
            visitor.log_event(unique("topic"), "x")
            assert visitor.submit(inc, 10).result(timeout=10) == 11
        assert client.submit(inc, 20).result(timeout=10) == 21
        assert client.gather(client.map(inc, range(5))) == [1, 2, 3, 4, 5]
        pattern = re.compile(rf"Plugin 'exploder' failed in {hook}\b.*exploder blew up", re.S)
        poll(
            lambda: any(pattern.search(m) for _, m in client.get_scheduler_logs(n=200)),
            timeout=3,
            what=f"the failure of {hook} in the scheduler logs",
        )
    finally:
        client.unregister_scheduler_plugin("exploder")


@pytest.mark.parametrize("hook", ["transition", "teardown"])  # setup: test_plugin_hygiene.py
def test_a_worker_plugin_that_raises_is_logged_with_its_name_and_the_worker_keeps_working(
    client, hook
):
    workers = sorted(client.scheduler_info()["workers"])
    client.register_plugin(WorkerExploder(hook))
    try:
        one_each = [client.submit(inc, i, workers=[a]) for i, a in enumerate(workers)]
        assert client.gather(one_each) == [1, 2]
    finally:
        client.unregister_worker_plugin(WorkerExploder.name)
    pattern = re.compile(rf"Plugin 'worker-exploder' failed in {hook}\b.*blew up", re.S)
    for address in workers:
        logs = client.get_worker_logs(n=50, workers=[address])[address]
        assert any(pattern.search(message) for _, message in logs), address
    assert sorted(client.scheduler_info()["workers"]) == workers


def test_idempotent_plugins_are_not_registered_twice(cluster, client):
    topic = unique("watcher")
    name = unique("idempotent-watcher")
    try:
        client.register_plugin(CountingSchedulerPlugin())
        scheduler_plugin = recorder_on(cluster, CountingSchedulerPlugin.name)
        client.register_plugin(CountingSchedulerPlugin())
        assert recorder_on(cluster, CountingSchedulerPlugin.name) is scheduler_plugin
        assert scheduler_plugin.starts == 1

        client.register_plugin(TransitionWatcher(name, topic, idempotent=True))
        installed = client.run(plugin_state, name)
        client.register_plugin(TransitionWatcher(name, topic, idempotent=True))
        again = client.run(plugin_state, name)
        assert {a: s["id"] for a, s in again.items()} == {a: s["id"] for a, s in installed.items()}
        assert all(state["setups"] == 1 for state in again.values())
        assert [m["hook"] for _, m in client.get_events(topic)] == ["setup", "setup"]
    finally:
        client.unregister_scheduler_plugin(CountingSchedulerPlugin.name)
        client.unregister_worker_plugin(name)


def test_a_plugin_without_idempotent_is_replaced(cluster, client):
    topic = unique("watcher")
    name = unique("watcher")
    client.register_plugin(TransitionWatcher(name, topic))
    client.register_plugin(TransitionWatcher(name, topic))
    try:
        hooks = [
            (m["hook"], m["worker"])
            for _, m in poll(
                lambda: len(client.get_events(topic)) == 6 and client.get_events(topic)
            )
        ]
        for worker in cluster.scheduler.workers:
            assert [hook for hook, w in hooks if w == worker] == ["setup", "teardown", "setup"]
    finally:
        client.unregister_worker_plugin(name)


def test_unregistering_worker_plugins_tears_them_down(cluster, client):
    topic = unique("watcher")
    name = unique("watcher")
    client.register_plugin(TransitionWatcher(name, topic))
    assert all(state is not None for state in client.run(plugin_state, name).values())
    client.unregister_worker_plugin(name)
    assert set(client.run(plugin_state, name).values()) == {None}
    events = poll(lambda: len(client.get_events(topic)) == 4 and client.get_events(topic))
    teardowns = {m["worker"] for _, m in events if m["hook"] == "teardown"}
    assert teardowns == set(cluster.scheduler.workers)
    assert name not in cluster.scheduler.worker_plugins


def test_unregistering_an_unknown_plugin_is_an_error(client):
    with pytest.raises(ValueError, match="no scheduler plugin named"):
        client.unregister_scheduler_plugin(unique("nobody"))
    with pytest.raises(ValueError, match="no worker plugin named"):
        client.unregister_worker_plugin(unique("nobody"))


def test_a_worker_plugin_reaches_a_worker_that_joins_later():
    topic, name = unique("watcher"), unique("watcher")
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        client.register_plugin(TransitionWatcher(name, topic))
        cluster.scale(2)
        newcomer = next(
            a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "1"
        )
        assert client.run(plugin_state, name, workers=[newcomer])[newcomer]["setups"] == 1

        future = client.submit(inc, 5, workers=[newcomer])
        assert future.result(timeout=10) == 6
        seen = client.run(plugin_state, name, workers=[newcomer])[newcomer]["transitions"]
        steps = [(start, finish) for key, start, finish, _ in seen if key == future.key]
        assert steps == [("released", "ready"), ("ready", "executing"), ("executing", "memory")]
        assert all(kwargs["stimulus_id"] for key, _, _, kwargs in seen if key == future.key)
