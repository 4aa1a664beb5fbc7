"""More of the dask-examples notebooks (delayed, bag, array, dataframe, futures and the
embarrassingly parallel application), written as there; see ``snippets.py`` for the rules.
Random data comes from seeded generators, so both systems see the same numbers."""

from __future__ import annotations

from .snippets import Snippet

SNIPPETS = [
    Snippet(
        "delayed-decorator-sum",
        "dask-examples: delayed.ipynb (@delayed functions, a delayed sum)",
        """
from dask import delayed

@delayed
def inc(x):
    return x + 1

@delayed
def double(x):
    return 2 * x

results = [double(inc(i)) for i in range(8)]
total = delayed(sum)(results)
result = total.compute()
""",
    ),
    Snippet(
        "delayed-dask-compute-many",
        "dask-examples: delayed.ipynb (dask.compute(*results))",
        """
import dask
from dask import delayed

def inc(x):
    return x + 1

results = [delayed(inc)(i) for i in range(5)]
result = dask.compute(*results)
""",
    ),
    Snippet(
        "delayed-methods-attributes",
        "docs (dask): Delayed, methods and attributes of delayed objects",
        """
from dask import delayed

text = delayed("a,b,c,b")
parts = text.split(",")
result = (parts.count("b").compute(), parts[1:].compute(), delayed([1, 2, 3]).index(2).compute())
""",
    ),
    Snippet(
        "delayed-nout",
        "docs (dask): Delayed, nout= unpacks a tuple result",
        """
from dask import delayed

def divmod_(a, b):
    return a // b, a % b

q, r = delayed(divmod_, nout=2)(17, 5)
result = (q.compute(), r.compute())
""",
    ),
    Snippet(
        "delayed-persist",
        "dask-examples: delayed.ipynb (persist keeps results on the cluster)",
        """
from dask import delayed

def inc(x):
    return x + 1

x = delayed(inc)(1).persist()
result = (x.compute(), delayed(inc)(x).compute())
""",
    ),
    Snippet(
        "delayed-exception",
        "dask-examples: delayed.ipynb (an error raised by a delayed task)",
        """
from dask import delayed

def fail(x):
    raise ValueError(f"bad value {x}")

try:
    delayed(fail)(3).compute()
except ValueError as e:
    result = str(e)
""",
    ),
    Snippet(
        "embarrassingly-parallel-map",
        "dask-examples: applications/embarrassingly-parallel.ipynb (client.map over parameters)",
        """
import numpy as np
import pandas as pd

def costly_simulation(list_param):
    return float(np.sum(list_param) * np.prod(list_param))

input_params = pd.DataFrame(
    np.random.RandomState(0).random_sample(size=(50, 4)),
    columns=["param_a", "param_b", "param_c", "param_d"],
)
futures = client.map(costly_simulation, input_params.values)
results = client.gather(futures)
output = input_params.copy()
output["result"] = pd.Series(results, index=output.index)
result = output["result"].tolist()
""",
    ),
    Snippet(
        "embarrassingly-parallel-delayed",
        "dask-examples: applications/embarrassingly-parallel.ipynb (the same with dask.delayed)",
        """
import dask
import numpy as np

def costly_simulation(list_param):
    return float(np.sum(list_param) * np.prod(list_param))

params = np.random.RandomState(1).random_sample(size=(20, 4))
lazy_results = [dask.delayed(costly_simulation)(p) for p in params]
result = list(dask.compute(*lazy_results))
""",
    ),
    Snippet(
        "embarrassingly-parallel-submit-loop",
        "dask-examples: applications/embarrassingly-parallel.ipynb (a submit loop, then gather)",
        """
def costly_simulation(list_param):
    return sum(list_param) * 2

futures = []
for parameters in [[i, i + 1, i + 2] for i in range(10)]:
    future = client.submit(costly_simulation, parameters)
    futures.append(future)
result = client.gather(futures)
""",
    ),
    Snippet(
        "bag-records-pipeline",
        "dask-examples: bag.ipynb (json records: map, filter, pluck, frequencies)",
        """
import json
import dask.bag as db

people = [
    json.dumps({"name": name, "age": 20 + i % 30, "occupation": ["baker", "smith", "poet"][i % 3]})
    for i, name in enumerate(["ann", "bob", "cy", "dee", "eve"] * 40)
]
b = db.from_sequence(people, npartitions=5).map(json.loads)
result = (
    b.filter(lambda r: r["age"] > 30).count().compute(),
    sorted(b.pluck("occupation").frequencies().compute()),
    b.pluck("name").distinct().compute().__len__(),
)
""",
    ),
    Snippet(
        "bag-groupby-foldby",
        "dask-examples: bag.ipynb (groupby and foldby)",
        """
import dask.bag as db

b = db.from_sequence(range(100), npartitions=4)
grouped = sorted((k, sorted(v)[:3]) for k, v in b.groupby(lambda x: x % 3).compute())
folded = sorted(b.foldby(lambda x: x % 3, lambda total, x: total + x, 0).compute())
result = (grouped, folded)
""",
    ),
    Snippet(
        "bag-to-dataframe",
        "dask-examples: bag.ipynb (to_dataframe)",
        """
import dask.bag as db

records = [{"name": n, "amount": i} for i, n in enumerate(["a", "b"] * 50)]
df = db.from_sequence(records, npartitions=4).to_dataframe()
result = df.groupby("name").amount.sum().compute().sort_index().to_dict()
""",
    ),
    Snippet(
        "array-random-reductions",
        "dask-examples: array.ipynb (random data, mean along an axis)",
        """
import dask.array as da

x = da.random.RandomState(42).normal(10, 0.1, size=(2000, 2000), chunks=(500, 500))
y = x.mean(axis=0)[::100]
result = (y.compute().round(6).tolist(), round(float(x.std().compute()), 6))
""",
    ),
    Snippet(
        "array-from-numpy-matmul",
        "docs (dask): Array, from_array and linear algebra",
        """
import numpy as np
import dask.array as da

a = np.arange(400, dtype=float).reshape(20, 20)
x = da.from_array(a, chunks=(5, 5))
result = ((x @ x.T).sum().compute(), x[x > 200].sum().compute())
""",
    ),
    Snippet(
        "array-map-blocks",
        "docs (dask): Array, map_blocks",
        """
import dask.array as da

x = da.arange(20, chunks=5)
result = x.map_blocks(lambda block: block * 2, dtype=int).compute()
""",
    ),
    Snippet(
        "dataframe-timeseries",
        "dask-examples: dataframe.ipynb (dask.datasets.timeseries, groupby, resample)",
        """
import dask

df = dask.datasets.timeseries(start="2000-01-01", end="2000-01-03", freq="10s", seed=42)
by_name = df.groupby("name").x.mean().compute().sort_index().round(9)
hourly = df.y.resample("1h").max().compute().round(9)
result = (by_name.to_dict(), len(hourly), hourly.iloc[:3].tolist(), len(df))
""",
    ),
    Snippet(
        "dataframe-persist-filter",
        "dask-examples: dataframe.ipynb (persist, then filter and aggregate)",
        """
import pandas as pd
import dask.dataframe as dd

pdf = pd.DataFrame({"x": range(1000), "y": [i % 7 for i in range(1000)]})
df = dd.from_pandas(pdf, npartitions=5).persist()
result = (
    int(df[df.y == 3].x.sum().compute()),
    df.y.value_counts().compute().sort_index().tolist(),
    df.map_partitions(len).compute().tolist(),
)
""",
    ),
    Snippet(
        "dataframe-shuffle-merge-set-index",
        "dask-examples: dataframe.ipynb (shuffles: shuffle, merge, set_index)",
        """
import pandas as pd
import dask.dataframe as dd

pdf = pd.DataFrame({"k": [i % 13 for i in range(2000)], "v": range(2000)})
df = dd.from_pandas(pdf, npartitions=8)
shuffled = df.shuffle("k")
totals = df.groupby("k").v.sum().reset_index().rename(columns={"v": "total"})
merged = df.merge(totals, on="k")
result = (
    len(shuffled),
    int(shuffled.map_partitions(lambda part: part.k.nunique()).compute().sum()),
    sorted(merged.total.unique().compute().tolist()),
    df.set_index("v").loc[100:105].k.compute().tolist(),
)
""",
    ),
    Snippet(
        "futures-notebook-dynamic-graph",
        "dask-examples: futures.ipynb (submitting as results arrive)",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

def add(x, y):
    return x + y

futures = client.map(inc, range(8))
ac = as_completed(futures)
while ac.count() > 1:
    a = next(ac)
    b = next(ac)
    ac.add(client.submit(add, a, b))
result = next(ac).result()
""",
    ),
    Snippet(
        "dataframe-csv-round-trip",
        "dask-examples: dataframe.ipynb (to_csv, read_csv of many files)",
        """
import os, tempfile
import pandas as pd
import dask.dataframe as dd

directory = tempfile.mkdtemp()
pdf = pd.DataFrame({"a": range(100), "b": [i % 3 for i in range(100)]})
dd.from_pandas(pdf, npartitions=4).to_csv(os.path.join(directory, "part-*.csv"), index=False)
df = dd.read_csv(os.path.join(directory, "*.csv"))
result = (sorted(os.listdir(directory)), df.groupby("b").a.sum().compute().to_dict())
""",
    ),
    Snippet(
        "dataframe-parquet-round-trip",
        "dask-examples: dataframe.ipynb (to_parquet, read_parquet with a filter)",
        """
import os, tempfile
import pandas as pd
import dask.dataframe as dd

path = os.path.join(tempfile.mkdtemp(), "table.parquet")
pdf = pd.DataFrame({"a": range(100), "b": [i % 5 for i in range(100)]})
dd.from_pandas(pdf, npartitions=4).to_parquet(path)
df = dd.read_parquet(path, filters=[("b", "==", 2)])
result = (df.npartitions, sorted(df.a.compute().tolist())[:5], int(df.a.sum().compute()))
""",
    ),
    Snippet(
        "dataframe-compute-future",
        "docs: Managing Computation (client.compute of a dataframe, persist then head)",
        """
import pandas as pd
import dask.dataframe as dd

df = dd.from_pandas(pd.DataFrame({"x": range(20), "y": range(20, 40)}), npartitions=4)
df = client.persist(df[df.x % 2 == 0])
future = client.compute(df.y.sum())
result = (future.result(), df.head(3).to_dict("list"), len(df))
""",
    ),
    Snippet(
        "bag-read-text-json",
        "dask-examples: bag.ipynb (read_text of json lines, to_textfiles)",
        """
import json, os, tempfile
import dask.bag as db

directory = tempfile.mkdtemp()
for i in range(3):
    with open(os.path.join(directory, f"{i}.json"), "w") as f:
        for j in range(5):
            f.write(json.dumps({"id": i * 5 + j, "even": (i * 5 + j) % 2 == 0}) + "\\n")
records = db.read_text(os.path.join(directory, "*.json")).map(json.loads)
evens = records.filter(lambda r: r["even"]).pluck("id")
out = os.path.join(directory, "out")
evens.map(str).to_textfiles(os.path.join(out, "*.txt"))
result = (sorted(evens.compute()), records.npartitions, sorted(os.listdir(out)))
""",
    ),
    Snippet(
        "array-from-delayed-stack",
        "docs (dask): Array, from_delayed and stack",
        """
import numpy as np
import dask
import dask.array as da

@dask.delayed
def load(i):
    return np.full((3, 3), i)

blocks = [da.from_delayed(load(i), shape=(3, 3), dtype=int) for i in range(4)]
stacked = da.stack(blocks)
result = (stacked.shape, stacked.sum(axis=(1, 2)).compute().tolist())
""",
    ),
    Snippet(
        "array-persist-method",
        "dask-examples: array.ipynb (x.persist() keeps chunks on the cluster)",
        """
import dask.array as da

x = da.arange(10_000, chunks=1000).persist()
result = (int(x.sum().compute()), x[::1000].compute().tolist())
""",
    ),
    Snippet(
        "local-cluster-client",
        "docs: Quickstart (LocalCluster and Client in a with block)",
        """
from dask.distributed import Client, LocalCluster

cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0")
with cluster, Client(cluster) as local:
    result = (local.submit(sum, [1, 2, 3]).result(), sum(local.nthreads().values()))
""",
    ),
    Snippet(
        "local-cluster-resources",
        "docs: Worker Resources (workers that lend resources, tasks that need them)",
        """
from dask.distributed import LocalCluster, get_worker

def where(x):
    return get_worker().name

cluster = LocalCluster(
    n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0",
    resources={"GPU": 1},
)
with cluster:
    local = cluster.get_client()
    cluster.wait_for_workers(1, timeout=10)
    gpu = [local.submit(where, i, resources={"GPU": 1}) for i in range(3)]
    plain = local.submit(where, 10)
    result = (len(local.gather(gpu)), plain.result() == gpu[0].result())
    local.close()
""",
    ),
]
