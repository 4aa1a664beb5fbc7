"""Dask's documented diagnostics examples ("Diagnostics (distributed)"), with only the import
changed, on storied and on dask.distributed side by side."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

da = pytest.importorskip("dask.array")


@pytest.fixture(params=["storied", "distributed"])
def flavour(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The module the example imports from, with a client of its cluster made the default."""
    module = importlib.import_module(request.param)
    cluster = request.getfixturevalue("cluster" if request.param == "storied" else "dask_cluster")
    with module.Client(cluster):
        yield module


def test_progress_of_a_persisted_array(flavour: Any, capsys: pytest.CaptureFixture[str]) -> None:
    x = da.ones((400, 400), chunks=100) * 2
    x = x.persist()
    flavour.progress(x)
    printed = capsys.readouterr().out
    assert "100%" in printed
    assert float(x.sum().compute()) == 2 * 400 * 400


def test_task_stream_of_a_sum(flavour: Any) -> None:
    x = da.random.random((400, 400), chunks=100)
    with flavour.get_task_stream() as ts:
        x.sum().compute()
    assert len(ts.data) >= 16  # every chunk made and summed, and the sums combined
    names = {str(entry["key"]).strip("('").split("-")[0] for entry in ts.data}
    assert {"random_sample", "sum"} <= names
    assert all(entry["status"] == "OK" for entry in ts.data)


def test_performance_report_of_a_computation(flavour: Any, tmp_path: Path) -> None:
    if flavour.__name__ == "distributed":
        pytest.importorskip("bokeh", reason="dask.distributed draws its report with bokeh")
    x = da.random.random((400, 400), chunks=100)
    with flavour.performance_report(filename=tmp_path / "dask-report.html"):
        (x + x.T).mean().compute()
    text = (tmp_path / "dask-report.html").read_text()
    assert "random_sample" in text
