"""The benchmark harness: table arithmetic, failure containment, and a real run on the pool.

Nothing here asserts on timings; the figures themselves are checked only for shape and sanity.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
DASK_PYTHON = BENCH_DIR.parent / ".bench" / "dask" / "bin" / "python"


def _load_driver() -> ModuleType:
    loader = SourceFileLoader("bench_run", str(BENCH_DIR / "run"))
    spec = importlib.util.spec_from_loader("bench_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    loader.exec_module(module)
    return module


driver = _load_driver()
workloads = sys.modules["workloads"]  # the driver put bench/ on sys.path and imported it


def make_run(system: str, value: float, error: str | None = None, workload: str = "map") -> Any:
    metrics = {} if error else {"tasks_per_s": value}
    return driver.Run(system, workload, 100, 1, 1.0, metrics=metrics, error=error)


# --- the table -----------------------------------------------------------------------------


def test_ratio_says_better_in_the_metrics_own_direction() -> None:
    faster = workloads.Metric("tasks_per_s", "tasks/s", higher_is_better=True)
    quicker = workloads.Metric("median_ms", "ms", higher_is_better=False)
    assert driver.ratio_cell([200.0], [100.0], faster) == "2.00 (better)"
    assert driver.ratio_cell([50.0], [100.0], faster) == "0.50 (worse)"
    assert driver.ratio_cell([2.0], [4.0], quicker) == "0.50 (better)"
    assert driver.ratio_cell([8.0], [4.0], quicker) == "2.00 (worse)"
    assert driver.ratio_cell([1.0], [2000.0], quicker) == "0.0005 (better)"
    assert driver.ratio_cell([1000.0], [2.0], faster) == "500 (better)"
    assert driver.ratio_cell(None, [4.0], quicker) == "-"


def test_ratio_pairs_the_repeats_that_ran_back_to_back() -> None:
    faster = workloads.Metric("tasks_per_s", "tasks/s", higher_is_better=True)
    # the machine ran twice as fast in the second repeat, and a slow spell hit storied alone in
    # the third: two repeats of three say storied is 10% faster; the medians say 0.99
    ours, theirs = [99.0, 220.0, 60.0], [90.0, 200.0, 100.0]
    assert driver.ratio_cell(ours, theirs, faster) == "1.10 (better)"
    assert driver.ratio_cell(ours[:2], theirs, faster) == "1.59 (better)"  # unpaired: medians


def test_summary_cell_shows_median_and_range() -> None:
    assert driver.summary_cell([3.0, 1.0, 2.0]) == "2.00 (1.00-3.00)"
    assert driver.summary_cell([1500.0, 2500.0, 12000.0]) == "2,500 (1,500-12,000)"
    assert driver.summary_cell(None) == "error"
    assert driver.summary_cell([]) == "n/a"


def test_table_marks_errors_absent_workloads_and_ratios() -> None:
    systems = ["storied", "dask", "pool"]
    work = driver.plan(
        [workloads.WORKLOADS["map"], workloads.WORKLOADS["story"]],
        {"map": [100], "story": [100]},
        systems,
    )
    runs = [
        make_run("storied", 300.0),
        make_run("storied", 100.0),
        make_run("dask", 100.0),
        make_run("dask", 0.0, error="exit code 1: boom"),
        make_run("pool", 50.0),
        driver.Run("storied", "story", 100, 1, 1.0, metrics={"story_us": 5.0}),
        driver.Run("dask", "story", 100, 1, 1.0, metrics={"story_us": 500.0}),
    ]
    header, rows = driver.build_table(runs, work, systems)
    map_row, story_row = rows  # no run reported CPU or ledger size: those rows are left out
    assert header[-2:] == ["storied/dask", "storied/pool"]
    assert map_row[4:] == ["200 (100-300)", "error", "50.0 (50.0-50.0)", "-", "4.00 (better)"]
    assert story_row[3] == "lower"
    assert story_row[6:] == ["n/a", "0.01 (better)", "-"]  # 5/500


def test_a_metric_one_system_reports_keeps_its_row() -> None:
    systems = ["storied", "storied-ledger"]
    work = driver.plan([workloads.WORKLOADS["map"]], {"map": [100]}, systems)
    runs = [
        make_run("storied", 300.0),
        driver.Run(
            "storied-ledger",
            "map",
            100,
            1,
            1.0,
            metrics={"tasks_per_s": 250.0, "ledger_bytes_per_task": 1800.0},
        ),
    ]
    _, rows = driver.build_table(runs, work, systems)
    assert [row[2] for row in rows] == [
        "tasks_per_s (tasks/s)",
        "ledger_bytes_per_task (B/task on disk)",
    ]
    assert rows[1][4:6] == ["n/a", "1,800 (1,800-1,800)"]


def test_renderers_keep_one_line_per_row() -> None:
    header, rows = ["a", "bb"], [["xxx", "y"], ["z", "wwww"]]
    markdown = driver.render_markdown(header, rows).splitlines()
    assert markdown == ["| a | bb |", "| --- | --- |", "| xxx | y |", "| z | wwww |"]
    text = driver.render_text(header, rows).splitlines()
    assert [line.split() for line in text] == [
        ["a", "bb"],
        ["---", "----"],
        ["xxx", "y"],
        ["z", "wwww"],
    ]


def test_parse_sizes_accepts_several_sizes_and_rejects_nonsense() -> None:
    assert driver.parse_sizes(["map=1_000,50", "story=7"], workloads.WORKLOADS) == {
        "map": [1000, 50],
        "story": [7],
    }
    for bad in (["nope=3"], ["map"], ["map=x"], ["map=0"]):
        with pytest.raises(ValueError, match="bad --sizes entry"):
            driver.parse_sizes(bad, workloads.WORKLOADS)


def test_unknown_system_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert driver.main(["--systems", "pool,spark"]) == 2
    assert "unknown systems: spark" in capsys.readouterr().err


# --- failure containment -------------------------------------------------------------------


@pytest.fixture
def fake_measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Point the driver at a stand-in measurement script run by this interpreter."""

    def install(body: str) -> None:
        script = tmp_path / "fake_workload.py"
        script.write_text(textwrap.dedent(body))
        monkeypatch.setattr(driver, "WORKLOADS_SCRIPT", script)
        monkeypatch.setattr(driver, "venv_python", lambda system: Path(sys.executable))

    return install


def test_measure_reads_the_last_json_line_among_noise(fake_measurement) -> None:
    fake_measurement("""
        import json
        print("worker chatter {not json")
        print(json.dumps({"workload": "map", "metrics": {"tasks_per_s": 12.5},
                          "versions": {"python": "3"}}))
    """)
    run = driver.measure("dask", "map", 10, 1, timeout=60)
    assert run.error is None
    assert run.metrics == {"tasks_per_s": 12.5}
    assert run.versions == {"python": "3"}


def test_measure_reports_a_crash_with_its_last_words(fake_measurement) -> None:
    fake_measurement("""
        import sys
        sys.exit("cluster would not start")
    """)
    run = driver.measure("dask", "map", 10, 1, timeout=60)
    assert run.error == "exit code 1: cluster would not start"


def test_measure_times_out_and_kills_the_whole_process_group(
    fake_measurement, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    fake_measurement(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    run = driver.measure("dask", "map", 10, 1, timeout=1)
    assert run.error == "timed out after 1 s"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _is_running(grandchild):
        assert time.monotonic() < deadline, "the measurement's child outlived the timeout"
        time.sleep(0.05)


def _is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_failing_system_is_not_retried_but_others_go_on(monkeypatch) -> None:
    calls = []

    def fake_measure(system: str, workload: str, size: int, repeat: int, timeout: float) -> Any:
        calls.append((system, repeat))
        return make_run(system, 1.0, error="boom" if system == "storied" else None)

    monkeypatch.setattr(driver, "measure", fake_measure)
    work = driver.plan([workloads.WORKLOADS["map"]], {"map": [100]}, ["storied", "dask"])
    driver.run_all(work, repeats=3, timeout=1)
    assert calls == [("storied", 1), ("dask", 1), ("dask", 2), ("dask", 3)]


def test_each_repeat_starts_with_the_next_system(monkeypatch) -> None:
    calls = []

    def fake_measure(system: str, workload: str, size: int, repeat: int, timeout: float) -> Any:
        calls.append((system, repeat))
        return make_run(system, 1.0)

    monkeypatch.setattr(driver, "measure", fake_measure)
    systems = ["storied", "storied-norecord", "dask"]
    work = driver.plan([workloads.WORKLOADS["map"]], {"map": [100]}, systems)
    driver.run_all(work, repeats=4, timeout=1)
    assert [system for system, _ in calls] == [
        *("storied", "storied-norecord", "dask"),
        *("storied-norecord", "dask", "storied"),
        *("dask", "storied", "storied-norecord"),
        *("storied", "storied-norecord", "dask"),
    ]
    assert [repeat for _, repeat in calls] == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3


# --- workload logic without a cluster ------------------------------------------------------


class InlineBackend(workloads.Backend):
    """Runs each task at submit time; handles are results, so a tree passes values along."""

    name = "inline"

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn, *args):
        self.submitted += 1
        return fn(*args)

    def result(self, handle):
        return handle


@pytest.mark.parametrize("leaves", [1, 5, 64])
def test_tree_submits_one_task_per_leaf_and_per_pair(leaves: int) -> None:
    backend = InlineBackend()
    figures = workloads.run_tree(backend, leaves)
    assert backend.submitted == 2 * leaves - 1
    assert figures["tasks_per_s"] > 0


class CappedEventsClient:
    """Keeps only the newest ``cap`` events of each topic, as dask's default does."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.events: dict[str, list[tuple[float, Any]]] = {}

    def log_event(self, topic: str, msg: Any) -> None:
        self.events.setdefault(topic, []).append((time.time(), msg))
        del self.events[topic][: -self.cap]

    def get_events(self, topic: str) -> tuple[tuple[float, Any], ...]:
        return tuple(self.events.get(topic, ()))


def test_client_events_reports_how_many_a_capped_ledger_kept(monkeypatch) -> None:
    monkeypatch.setattr(workloads, "SETTLE_S", 0.05)
    backend = workloads.FuturesBackend("dask", CappedEventsClient(cap=40))
    figures = workloads.run_client_events(backend, 100)
    assert figures["kept"] == 40
    assert figures["events_per_s"] > 0


def test_split_range_covers_every_index_once() -> None:
    slices = workloads.split_range(23, 5)
    covered = [i for first, length in slices for i in range(first, first + length)]
    assert covered == list(range(23))
    assert {length for _, length in slices} == {4, 5}


def test_percentile_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 301)]
    assert workloads.percentile(values, 99) == 297.0
    assert workloads.percentile(values, 50) == 150.0
    assert workloads.percentile([7.0], 99) == 7.0


# --- real runs -----------------------------------------------------------------------------


def test_full_driver_run_on_the_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw.json"
    arguments = "--systems pool --workloads map,roundtrip --sizes map=40 roundtrip=5 --repeats 2"
    status = driver.main([*arguments.split(), "--markdown", "--json", str(raw)])
    assert status == 0
    table = capsys.readouterr().out
    assert "| map | 40 tasks | tasks_per_s (tasks/s) | higher |" in table
    assert "Versions: python " in table
    document = json.loads(raw.read_text())
    assert [(r["workload"], r["repeat"]) for r in document["runs"]] == [
        ("map", 1),
        ("map", 2),
        ("roundtrip", 1),
        ("roundtrip", 2),
    ]
    assert all(r["error"] is None for r in document["runs"])
    assert document["machine"]["cpus"] == str(os.cpu_count())


@pytest.mark.skipif(not DASK_PYTHON.exists(), reason="no .bench/dask venv")
def test_worker_events_on_dask_keeps_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver, "venv_python", lambda system: DASK_PYTHON)
    run = driver.measure("dask", "worker_events", 300, 1, timeout=120)
    assert run.error is None
    assert run.metrics["kept"] == 300
    assert run.versions["distributed"]


@pytest.mark.parametrize("system", ["raw-tcp", "storied", "storied-shm", "storied-tcp"])
def test_the_transfer_workload_reports_every_rate_and_cpu_cost(system: str) -> None:
    run = driver.measure(system, "transfer", 2, 1, timeout=120)
    assert run.error is None, run.error
    names = {metric.name for metric in workloads.WORKLOADS["transfer"].metrics}
    if system == "raw-tcp":  # two processes copying bytes: nothing is made on a worker
        names -= {metric.name for metric in workloads.TRANSFER_PRODUCE}
    else:
        assert all(run.metrics[metric.name] > 0 for metric in workloads.TRANSFER_PRODUCE)
    assert set(run.metrics) == names
    assert all(run.metrics[metric.name] > 0 for metric in workloads.TRANSFER_MB_S)
    # CPU is counted in clock ticks: a 2 MB move may take less than one
    assert all(run.metrics[metric.name] >= 0 for metric in workloads.TRANSFER_CPU)


def test_a_zero_on_the_peer_side_gives_no_ratio_rather_than_a_crash() -> None:
    """The churn workload's recomputed count is often 0 for one side."""
    fewer = workloads.Metric("recomputed", "tasks", higher_is_better=False)
    assert driver.ratio_cell([12.0], [0.0], fewer) == "-"
    assert driver.ratio_cell([12.0, 8.0], [0.0, 4.0], fewer) == "5.00 (worse)"  # 10 / 2: medians


def test_the_churn_workload_runs_only_when_named() -> None:
    defaults = driver.parse_args([]).workloads.split(",")
    assert "churn" not in defaults and "map" in defaults
    assert "churn" in driver.parse_args(["--workloads", "churn"]).workloads
    churn = workloads.WORKLOADS["churn"]
    assert churn.n_workers == 3 and churn.systems == {"storied", "dask"}


def test_churn_stream_counts_checked_trees_kills_and_replacements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short stream on real storied worker processes under nannies, really SIGKILLed."""
    monkeypatch.setattr(workloads, "CHURN_STREAM_S", 6.0)
    monkeypatch.setattr(workloads, "CHURN_KILL_INTERVAL_S", 1.5)
    # the workers cannot import bench/workloads.py: its task functions travel by value, as
    # they do when it runs as a script
    cloudpickle.register_pickle_by_value(workloads)
    try:
        result = workloads.measure("storied", "churn_stream", 64)
    finally:
        cloudpickle.unregister_pickle_by_value(workloads)
    metrics = result["metrics"]
    assert metrics["trees"] >= 1 and metrics["abandoned"] == 0
    assert metrics["tasks"] == metrics["trees"] * (2 * 64 - 1)
    assert 1 <= metrics["kills"] <= 4
    # each kill chose a live process, and the nannies brought up others in their place
    assert 1 <= metrics["replaced"] <= metrics["kills"]
    assert metrics["recomputed"] >= 0 and metrics["wasted"] == 0
    assert metrics["runs_per_s"] >= metrics["tasks_per_s"] > 0


def test_the_churn_stream_workload_runs_only_when_named() -> None:
    assert "churn_stream" not in driver.parse_args([]).workloads.split(",")
    stream = workloads.WORKLOADS["churn_stream"]
    assert stream.n_workers == 3 and stream.systems == {"storied", "dask"}
