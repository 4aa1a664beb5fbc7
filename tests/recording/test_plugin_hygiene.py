"""Plugin hygiene (issue 16, point 7): a failing hook is logged with its traceback a few times,
then counted in ``plugin-errors`` events; a plugin whose start/setup raised is not registered
and its registering caller gets the error, as in Dask."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from engine.helpers import poll

from storied import Client
from storied.plugin import LOGGED_FAILURES_PER_HOOK, PluginErrors

from .helpers import (
    Exploder,
    TransitionFlooder,
    WorkerExploder,
    WorkerTransitionFlooder,
    inc,
    small_cluster,
)


def _failing_hook() -> None:
    raise KeyError("boom")


def _fail_n_times(errors: PluginErrors, n: int, name: str = "p") -> None:
    for _ in range(n):
        try:
            _failing_hook()
        except KeyError as error:
            errors.failed(name, _failing_hook, error)


def test_plugin_errors_logs_the_first_failures_then_counts_and_summarises_each_once(caplog):
    errors = PluginErrors(logging.getLogger("storied.test-plugins"))
    with caplog.at_level(logging.ERROR, logger="storied.test-plugins"):
        _fail_n_times(errors, 10)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == LOGGED_FAILURES_PER_HOOK
    assert "KeyError: 'boom'" in caplog.text and "_failing_hook" in caplog.text
    assert len(caplog.records) == LOGGED_FAILURES_PER_HOOK + 1  # and one "counted from now on"
    [summary] = errors.summary()
    assert summary == {
        "action": "plugin-errors",
        "plugin": "p",
        "hook": "_failing_hook",
        "failures": 10,
        "total": 10,
        "logged": LOGGED_FAILURES_PER_HOOK,
        "last_error": "KeyError: 'boom'",
    }
    assert errors.summary() == []  # nothing new since
    _fail_n_times(errors, 2)
    _fail_n_times(errors, 1, name="q")
    summaries = {s["plugin"]: s for s in errors.summary()}
    assert (summaries["p"]["failures"], summaries["p"]["total"]) == (2, 12)
    assert (summaries["q"]["failures"], summaries["q"]["total"]) == (1, 1)
    assert errors.counts() == {("p", "_failing_hook"): 12, ("q", "_failing_hook"): 1}


def _plugin_lines(logs: list[tuple[str, str]], name: str) -> list[str]:
    """The log lines about plugin ``name``, oldest first (``get_*_logs`` are newest first)."""
    return [message for _, message in reversed(logs) if f"Plugin {name!r}" in message]


def test_a_plugin_failing_on_every_transition_of_4000_tasks_leaves_a_bounded_record():
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        client.register_plugin(TransitionFlooder())
        plugin = cluster.scheduler.plugins[TransitionFlooder.name]
        assert sum(client.gather(client.map(inc, range(4000)))) == sum(range(1, 4001))
        lines = _plugin_lines(client.get_scheduler_logs(), TransitionFlooder.name)
        assert len(lines) == LOGGED_FAILURES_PER_HOOK + 1
        assert sum("Traceback" in line for line in lines) == LOGGED_FAILURES_PER_HOOK
        assert "ValueError: flooder fails on inc-" in lines[0]
        assert "counted in 'plugin-errors' events" in lines[-1]
        # reported while running, not only at the end
        poll(lambda: client.get_events("plugin-errors"), timeout=5, what="a periodic summary")
        assert plugin.calls >= 4000 * 3
    # the last summary goes out at close: every failure is counted, exactly once
    summaries = [msg for _, msg in cluster.scheduler.get_events("plugin-errors")]
    assert {(s["plugin"], s["hook"]) for s in summaries} == {("flooder", "transition")}
    assert sum(s["failures"] for s in summaries) == plugin.calls
    assert summaries[-1]["total"] == plugin.calls
    assert summaries[-1]["last_error"].startswith("ValueError: flooder fails on ")


def test_a_worker_plugin_failing_on_every_transition_is_counted_not_flooded():
    with small_cluster(n_workers=1) as cluster, Client(cluster) as client:
        [address] = client.scheduler_info()["workers"]
        client.register_plugin(WorkerTransitionFlooder())
        assert len(client.gather(client.map(inc, range(500)))) == 500
        lines = _plugin_lines(
            client.get_worker_logs(workers=[address])[address], WorkerTransitionFlooder.name
        )
        assert len(lines) == LOGGED_FAILURES_PER_HOOK + 1
        summaries = poll(
            lambda: [msg for _, msg in client.get_events("plugin-errors")],
            timeout=5,
            what="the worker's plugin-errors event",
        )
        assert summaries[0]["worker"] == address
        assert summaries[0]["plugin"] == "worker-flooder"
        assert summaries[0]["hook"] == "transition"
        assert summaries[0]["logged"] == LOGGED_FAILURES_PER_HOOK


def test_a_scheduler_plugin_whose_start_raises_is_not_registered_and_the_caller_gets_the_error():
    with small_cluster(n_workers=0) as cluster, Client(cluster) as client:
        with pytest.raises(RuntimeError, match="exploder blew up in start"):
            client.register_plugin(Exploder("start"))
        assert "exploder" not in cluster.scheduler.plugins
        logs = [message for _, message in client.get_scheduler_logs()]
        assert not any("Registered scheduler plugin 'exploder'" in m for m in logs)
        assert any("'exploder' not registered: its start() failed" in m for m in logs)
        client.register_plugin(Exploder("transition"))  # the name is free again
        assert "exploder" in cluster.scheduler.plugins


def test_a_worker_plugin_whose_setup_raises_is_registered_nowhere_and_the_caller_gets_the_error(
    client,
):
    workers = sorted(client.scheduler_info()["workers"])
    with pytest.raises(RuntimeError, match="worker-exploder blew up in setup"):
        client.register_plugin(WorkerExploder("setup"))

    def has_plugin(dask_worker: Any) -> bool:
        return "worker-exploder" in dask_worker.plugins

    assert client.run(has_plugin) == dict.fromkeys(workers, False)
    assert not any(
        "Registered worker plugin 'worker-exploder'" in m for _, m in client.get_scheduler_logs()
    )
    with pytest.raises(ValueError, match="no worker plugin named"):
        client.unregister_worker_plugin("worker-exploder")


def test_dask_also_refuses_a_scheduler_plugin_whose_start_raises(dask_client):
    from distributed.diagnostics.plugin import SchedulerPlugin as DaskSchedulerPlugin

    class DaskExploder(DaskSchedulerPlugin):
        name = "dask-exploder"

        def start(self, scheduler: Any) -> None:
            raise RuntimeError("dask-exploder blew up in start")

    with pytest.raises(RuntimeError, match="blew up in start"):
        dask_client.register_plugin(DaskExploder())
    assert "dask-exploder" not in dask_client.run_on_scheduler(
        lambda dask_scheduler: list(dask_scheduler.plugins)
    )
