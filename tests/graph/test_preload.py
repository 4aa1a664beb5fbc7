"""Workers import a collection's dask package while the client still builds its graph
(``storied.graph.packages`` names it, ``storied.worker.preload`` imports it)."""

from __future__ import annotations

import subprocess
import sys

import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import pandas as pd
from dask._expr import FinalizeCompute
from dask.base import collections_to_expr
from dask.highlevelgraph import HighLevelGraph

from storied import Client, LocalCluster
from storied.graph.packages import collection_packages
from storied.worker.preload import missing


def expression(collection: object) -> object:
    """What ``dask.compute`` hands a scheduler for ``collection``."""
    return FinalizeCompute(collections_to_expr([collection])).optimize()


def test_the_package_of_each_collection_is_named_before_its_graph_is_built():
    frame = dd.from_pandas(pd.DataFrame({"a": range(10)}), npartitions=2)
    assert collection_packages(expression(da.ones(10, chunks=5).sum())) == ["dask.array"]
    assert collection_packages(expression(db.from_sequence(range(4)).sum())) == ["dask.bag"]
    assert collection_packages(expression(frame.a.sum())) == ["dask.dataframe"]


def test_plain_graphs_name_no_package():
    assert collection_packages({"x": 1, "y": (sum, ["x"])}) == []
    assert collection_packages(HighLevelGraph.from_collections("x", {"x": 1})) == []


def test_a_worker_imports_only_dask_collection_packages_named_in_a_list():
    assert missing(["os", "subprocess", "dask.bag.core", 3, ["dask.array"]]) == []
    assert missing("dask.array") == [], "a str is not a list of names"
    assert missing(None) == []


def test_import_now_imports_what_is_missing_once():
    code = (
        "import sys; from storied.worker.preload import import_now; "
        "print(import_now(['dask.bag', 'os']), 'dask.bag' in sys.modules, "
        "import_now(['dask.bag']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['dask.bag']", "True", "[]"]


def test_workers_import_a_bags_package_before_its_first_task_arrives():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert not any(client.run(lambda: "dask.bag" in sys.modules).values())
        total = db.from_sequence(range(100), npartitions=4).map(lambda x: x + 1).sum()
        assert client.compute(total).result(timeout=30) == sum(range(1, 101))
        for logs in client.get_worker_logs().values():
            assert any("Imported dask.bag ahead of its tasks" in m for _, m in logs), logs
