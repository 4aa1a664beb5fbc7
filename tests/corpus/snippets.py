"""Examples from the dask.distributed documentation and the dask-examples notebooks, as written
there (``from dask.distributed import ...``); the corpus runs each on dask.distributed and, with
only that import changed, on storied. ``client`` is given; each snippet leaves ``result``.
Sleeps are shortened; results that depend on timing are left out."""

from __future__ import annotations

from typing import NamedTuple


class Snippet(NamedTuple):
    name: str
    source: str
    code: str


SNIPPETS = [
    Snippet(
        "quickstart-submit",
        "docs: Quickstart, Setup Dask.distributed the Easy Way",
        """
from dask.distributed import Client

def square(x):
    return x ** 2

def neg(x):
    return -x

A = client.map(square, range(10))
B = client.map(neg, A)
total = client.submit(sum, B)
result = total.result()
""",
    ),
    Snippet(
        "quickstart-gather",
        "docs: Quickstart",
        """
def square(x):
    return x ** 2

A = client.map(square, range(10))
result = client.gather(A)
""",
    ),
    Snippet(
        "futures-submit-result",
        "docs: Futures, Submit Tasks",
        """
def inc(x):
    return x + 1

future = client.submit(inc, 10)
result = (future.result(), future.done(), future.status)
""",
    ),
    Snippet(
        "futures-chain",
        "docs: Futures, Submit Tasks (futures as arguments)",
        """
def inc(x):
    return x + 1

def add(x, y):
    return x + y

x = client.submit(inc, 10)
y = client.submit(inc, x)
z = client.submit(add, x, y)
result = z.result()
""",
    ),
    Snippet(
        "futures-map-sum",
        "docs: Futures, Submit Tasks (map)",
        """
def inc(x):
    return x + 1

L = client.map(inc, range(1000))
total = client.submit(sum, L)
result = total.result()
""",
    ),
    Snippet(
        "futures-gather-nested",
        "docs: Futures, Move Data (gather of a structure)",
        """
def inc(x):
    return x + 1

futures = {"a": client.submit(inc, 1), "b": [client.submit(inc, 2), 7]}
result = client.gather(futures)
""",
    ),
    Snippet(
        "futures-scatter",
        "docs: Futures, Move Data (scatter)",
        """
[future] = client.scatter([list(range(100))])
result = client.submit(sum, future).result()
""",
    ),
    Snippet(
        "futures-scatter-dict",
        "docs: Futures, Move Data (scatter a dict)",
        """
futures = client.scatter({"x": 1, "y": 2})
result = sorted((key, f.result()) for key, f in futures.items())
""",
    ),
    Snippet(
        "futures-exception",
        "docs: Futures, Exceptions",
        """
def div(x, y):
    return x / y

a = client.submit(div, 1, 0)
try:
    a.result()
except ZeroDivisionError as e:
    caught = type(e).__name__
result = (caught, type(a.exception()).__name__, a.status)
""",
    ),
    Snippet(
        "futures-exception-propagates",
        "docs: Futures, Exceptions (dependents fail with the cause)",
        """
def div(x, y):
    return x / y

def inc(x):
    return x + 1

a = client.submit(div, 1, 0)
b = client.submit(inc, a)
try:
    b.result()
except ZeroDivisionError:
    result = "ZeroDivisionError"
""",
    ),
    Snippet(
        "futures-wait",
        "docs: Futures, Waiting on Futures (wait)",
        """
from dask.distributed import wait

def inc(x):
    return x + 1

futures = client.map(inc, range(10))
done, not_done = wait(futures)
result = (len(done), len(not_done), sorted(f.result() for f in done))
""",
    ),
    Snippet(
        "futures-as-completed",
        "docs: Futures, Waiting on Futures (as_completed)",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

futures = client.map(inc, range(10))
result = sorted(future.result() for future in as_completed(futures))
""",
    ),
    Snippet(
        "futures-as-completed-results",
        "docs: Futures, as_completed(with_results=True)",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

futures = client.map(inc, range(5))
result = sorted(value for future, value in as_completed(futures, with_results=True))
""",
    ),
    Snippet(
        "futures-cancel",
        "docs: Futures, Cancel",
        """
import time

def slow(x):
    time.sleep(5)
    return x

future = client.submit(slow, 1, pure=False)
future.cancel()
result = (future.cancelled(), future.status)
""",
    ),
    Snippet(
        "futures-pure",
        "docs: Futures, Submit Tasks (pure functions share a key)",
        """
def inc(x):
    return x + 1

a = client.submit(inc, 1)
b = client.submit(inc, 1)
c = client.submit(inc, 1, pure=False)
result = (a.key == b.key, a.key == c.key, c.result())
""",
    ),
    Snippet(
        "futures-key",
        "API: Client.submit(key=)",
        """
def inc(x):
    return x + 1

future = client.submit(inc, 1, key="my-own-key")
result = (future.key, future.result())
""",
    ),
    Snippet(
        "futures-retries",
        "API: Client.submit(retries=)",
        """
import os, tempfile

marker = tempfile.mktemp()

def flaky(path):
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("first try fails")
    return "second try"

result = client.submit(flaky, marker, retries=1).result()
os.unlink(marker)
""",
    ),
    Snippet(
        "futures-done-callback",
        "docs: Futures, add_done_callback",
        """
import threading

def inc(x):
    return x + 1

seen = []
called = threading.Event()

def callback(future):
    seen.append(future.result())
    called.set()

future = client.submit(inc, 41)
future.add_done_callback(callback)
called.wait(10)
result = seen
""",
    ),
    Snippet(
        "futures-run",
        "API: Client.run",
        """
def answer():
    return 42

result = sorted(client.run(answer).values())
""",
    ),
    Snippet(
        "futures-run-on-scheduler",
        "API: Client.run_on_scheduler",
        """
def scheduler_kind(dask_scheduler=None):
    return dask_scheduler is not None

result = client.run_on_scheduler(scheduler_kind)
""",
    ),
    Snippet(
        "futures-get-worker",
        "API: get_worker, inside a task",
        """
from dask.distributed import get_worker

def where():
    return get_worker().address in workers

workers = set(client.scheduler_info()["workers"])
result = all(client.gather(client.map(lambda i: where(), range(4))))
""",
    ),
    Snippet(
        "delayed-compute",
        "docs: Quickstart, dask.delayed on the cluster",
        """
import dask
from dask import delayed

def inc(x):
    return x + 1

def add(x, y):
    return x + y

x = delayed(inc)(1)
y = delayed(inc)(2)
z = delayed(add)(x, y)
result = (z.compute(), client.compute(z).result(), dask.compute(x, y))
""",
    ),
    Snippet(
        "delayed-tree-sum",
        "dask-examples: delayed.ipynb (tree summation)",
        """
from dask import delayed

def add(x, y):
    return x + y

L = list(range(64))
while len(L) > 1:
    L = list(map(delayed(add), L[0::2], L[1::2]))
result = L[0].compute()
""",
    ),
    Snippet(
        "delayed-futures-as-inputs",
        "docs: Futures, futures as inputs to dask.delayed",
        """
from dask import delayed

def inc(x):
    return x + 1

future = client.submit(inc, 1)
result = delayed(inc)(future).compute()
""",
    ),
    Snippet(
        "array-sum",
        "dask-examples: array.ipynb",
        """
import dask.array as da

x = da.arange(1_000_000, chunks=100_000).reshape(1000, 1000).rechunk((250, 250))
y = x + x.T
result = (int(y.sum().compute()), y[::2, 5:].mean().compute())
""",
    ),
    Snippet(
        "array-persist",
        "docs: Managing Memory, persist",
        """
import dask.array as da

x = da.ones((1000, 1000), chunks=(100, 100))
x = client.persist(x)
result = (float(x.sum().compute()), float((x + 1).mean().compute()))
""",
    ),
    Snippet(
        "bag-pipeline",
        "dask-examples: bag.ipynb",
        """
import dask.bag as db

b = db.from_sequence(range(1000), npartitions=10)
result = (
    b.map(lambda x: x * 2).filter(lambda x: x % 3 == 0).sum().compute(),
    b.frequencies().topk(3, key=lambda kv: kv[0]).compute(),
)
""",
    ),
    Snippet(
        "dataframe-groupby",
        "dask-examples: dataframe.ipynb",
        """
import pandas as pd
import dask.dataframe as dd

df = pd.DataFrame({"name": ["a", "b", "c", "a"] * 250, "x": range(1000), "y": [1.0] * 1000})
ddf = dd.from_pandas(df, npartitions=4)
result = ddf.groupby("name").x.sum().compute().sort_index().to_dict()
""",
    ),
    Snippet(
        "compute-collections",
        "docs: Futures, client.compute of collections",
        """
import dask.array as da

x = da.ones(100, chunks=10)
total, mean = client.compute([x.sum(), x.mean()])
result = (total.result(), mean.result())
""",
    ),
    Snippet(
        "client-get-graph",
        "API: Client.get",
        """
from operator import add

def inc(x):
    return x + 1

result = client.get({"x": (inc, 1), "y": (add, "x", 10)}, "y")
""",
    ),
    Snippet(
        "log-event-get-events",
        "docs: Logging, structured events",
        """
client.log_event("corpus-topic", {"status": "ok"})
import time
deadline = time.monotonic() + 5
while not client.get_events("corpus-topic") and time.monotonic() < deadline:
    time.sleep(0.01)
result = [msg for _, msg in client.get_events("corpus-topic")]
""",
    ),
]
