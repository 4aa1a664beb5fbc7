"""``TaskTable``: a run's tasks counted once, paged and searched by key prefix (pure)."""

from __future__ import annotations

from storied.dashboard.tally import RunCounts, TaskTable

STATES = {"inc-1a": "memory", "inc-1b": "memory", "inc-2": "erred", "sum-x1": "waiting"}
EXECUTIONS = [
    ("inc-1a", "w1", 0.0, 1.0, "memory"),
    ("inc-1b", "w2", 1.0, 1.5, "memory"),
    ("inc-2", "w1", 2.0, 2.25, "erred"),
    ("inc-2", "w2", 3.0, 3.5, "erred"),
    ("gone-1", "w2", 4.0, 4.1, "memory"),  # ran, then was forgotten
]


def test_live_counts_add_executions_as_they_come() -> None:
    counts = RunCounts()
    counts.add_executions(EXECUTIONS[:2])
    counts.add_executions(EXECUTIONS[2:])
    counts.set_states(STATES.items())
    assert counts.progress() == TaskTable(STATES, EXECUTIONS).counts.progress()
    counts.set_states([("inc-1a", "released")])
    (inc,) = [p for p in counts.progress() if p["prefix"] == "inc"]
    assert inc["states"] == {"released": 1} and inc["executed"] == 2 and inc["erred"] == 2


def test_counts_by_prefix_worker_and_outcome() -> None:
    table = TaskTable(STATES, EXECUTIONS)
    assert len(table) == 5
    assert table.counts.by_worker == {"w1": 2, "w2": 3}
    assert table.counts.outcomes == {"memory": 3, "erred": 2}
    assert table.counts.progress() == [
        {"prefix": "gone", "states": {}, "tasks": 0, "executed": 1, "erred": 0},
        {
            "prefix": "inc",
            "states": {"memory": 2, "erred": 1},
            "tasks": 3,
            "executed": 2,
            "erred": 2,
        },
        {"prefix": "sum", "states": {"waiting": 1}, "tasks": 1, "executed": 0, "erred": 0},
    ]


def test_pages_in_key_order_with_filters() -> None:
    table = TaskTable(STATES, EXECUTIONS)
    first, second = table.page(0, 3), table.page(3, 3)
    assert first["total"] == second["total"] == 5
    assert [t["key"] for t in first["tasks"] + second["tasks"]] == sorted([*STATES, "gone-1"])
    (erred,) = table.page(0, 10, state="erred")["tasks"]
    assert erred == {
        "key": "inc-2",
        "prefix": "inc",
        "state": "erred",
        "executed": 0,
        "erred": 2,
        "worker": "w2",
        "duration": 0.5,
    }
    assert table.page(0, 10, prefix="inc", state="memory")["total"] == 2
    assert table.page(10, 10)["tasks"] == []


def test_keys_starting_with_stops_at_the_limit() -> None:
    table = TaskTable(STATES, EXECUTIONS)
    assert table.starting_with("inc-1", 5) == (["inc-1a", "inc-1b"], False)
    assert table.starting_with("inc-", 2) == (["inc-1a", "inc-1b"], True)
    assert table.starting_with("inc-1a", 5) == ([], False)  # the key itself is not a sibling
    assert table.starting_with("zzz", 5) == ([], False)
