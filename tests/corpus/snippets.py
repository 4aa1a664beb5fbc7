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
    #: why storied gives something else than Dask here (listed on docs/dask-compatibility.md);
    #: the corpus expects the snippet to fail on storied, so a fix shows up
    differs: str | None = None


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
    time.sleep(0.5)
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
    Snippet(
        "task-launch-worker-client",
        "docs: Launch Tasks from Tasks (worker_client)",
        """
from dask.distributed import worker_client

def fib(n):
    if n < 2:
        return n
    with worker_client() as client:
        a_future = client.submit(fib, n - 1)
        b_future = client.submit(fib, n - 2)
        a, b = client.gather([a_future, b_future])
    return a + b

future = client.submit(fib, 10)
result = future.result()
""",
    ),
    Snippet(
        "task-launch-get-client-secede-rejoin",
        "docs: Launch Tasks from Tasks (get_client, secede, rejoin)",
        """
from dask.distributed import get_client, secede, rejoin

def fib(n):
    if n < 2:
        return n
    client = get_client()
    a_future = client.submit(fib, n - 1)
    b_future = client.submit(fib, n - 2)
    secede()
    a, b = client.gather([a_future, b_future])
    rejoin()
    return a + b

future = client.submit(fib, 10)
result = future.result()
""",
    ),
    Snippet(
        "futures-submit-from-tasks",
        "docs: Futures, Submit Tasks from Tasks (get_client)",
        """
from dask.distributed import get_client

def inc(x):
    return x + 1

def add_two_incs(x):
    client = get_client()
    a = client.submit(inc, x)
    b = client.submit(inc, x + 10)
    a, b = client.gather([a, b])
    return a + b

result = client.submit(add_two_incs, 1).result()
""",
    ),
    Snippet(
        "futures-fire-and-forget",
        "docs: Futures, Fire and Forget",
        """
from dask.distributed import fire_and_forget

def process(x):
    return x * 2

fire_and_forget(client.submit(process, 21, pure=False))
result = None
""",
    ),
    Snippet(
        "futures-as-completed-batches",
        "docs: API, as_completed.batches",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

futures = client.map(inc, range(8))
result = sorted(r for batch in as_completed(futures).batches() for r in client.gather(batch))
""",
    ),
    Snippet(
        "futures-as-completed-add",
        "docs: Futures, as_completed (adding futures while iterating)",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

def double(x):
    return 2 * x

futures = client.map(inc, range(3))
seen = []
ac = as_completed(futures)
for future in ac:
    seen.append(future.result())
    if future.result() < 10:
        ac.add(client.submit(double, future))
result = sorted(seen)
""",
    ),
    Snippet(
        "client-get-executor",
        "docs: API, Client.get_executor (concurrent.futures)",
        """
import concurrent.futures

def inc(x):
    return x + 1

with client.get_executor() as executor:
    futures = [executor.submit(inc, i) for i in range(4)]
    done, _ = concurrent.futures.wait(futures)
    mapped = list(executor.map(inc, range(3)))
result = (sorted(f.result() for f in done), mapped)
""",
    ),
    Snippet(
        "coordination-variable",
        "docs: Coordination Primitives, Global Variables",
        """
from dask.distributed import Variable

var = Variable("corpus-var")
var.set(1)
first = var.get()
future = client.submit(lambda x: x + 10, 5)
var.set(future)
result = (first, var.get().result())
var.delete()
""",
    ),
    Snippet(
        "coordination-queue",
        "docs: Coordination Primitives, Queues",
        """
from dask.distributed import Queue

def inc(x):
    return x + 1

queue = Queue("corpus-queue")
future = client.submit(inc, 41)
queue.put(future)
queue.put(7)
result = (queue.qsize(), queue.get().result(), queue.get())
""",
    ),
    Snippet(
        "coordination-lock",
        "docs: Coordination Primitives, Locks",
        """
from dask.distributed import Lock

def increment(path):
    with Lock("corpus-lock"):
        with open(path) as f:
            value = int(f.read())
        with open(path, "w") as f:
            f.write(str(value + 1))
    return True

import os, tempfile
path = tempfile.mktemp()
with open(path, "w") as f:
    f.write("0")
client.gather(client.map(increment, [path] * 10, pure=False))
with open(path) as f:
    result = int(f.read())
os.unlink(path)
""",
    ),
    Snippet(
        "coordination-semaphore",
        "docs: Coordination Primitives, Semaphore",
        """
from dask.distributed import Semaphore

sem = Semaphore(max_leases=2, name="corpus-database")

def access_limited(x, sem):
    with sem:
        return x * 2

result = sorted(client.gather(client.map(access_limited, range(6), sem=sem)))
""",
    ),
    Snippet(
        "coordination-event",
        "docs: Coordination Primitives, Events",
        """
from dask.distributed import Event

def wait_for_it(name):
    return Event(name).wait(timeout=10)

event = Event("corpus-event")
futures = client.map(wait_for_it, ["corpus-event"] * 2, pure=False)
event.set()
result = (client.gather(futures), event.is_set())
event.clear()
""",
    ),
    Snippet(
        "publish-dataset",
        "docs: Publish Datasets",
        """
def inc(x):
    return x + 1

x = client.submit(inc, 1)
client.publish_dataset(corpus_x=x)
names = client.list_datasets()
got = client.get_dataset("corpus_x").result()
client.unpublish_dataset("corpus_x")
result = ("corpus_x" in names, got, "corpus_x" in client.list_datasets())
""",
    ),
    Snippet(
        "actor-counter",
        "docs: Actors (the Counter example)",
        """
class Counter:
    n = 0

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

future = client.submit(Counter, actor=True)
counter = future.result()
calls = [counter.increment() for _ in range(3)]
result = ([c.result() for c in calls], counter.n)
""",
    ),
    Snippet(
        "submit-priority",
        "docs: Prioritizing Work (priority= is accepted and never reaches the function)",
        """
def inc(x):
    return x + 1

high = client.submit(inc, 1, priority=10)
low = client.map(inc, range(3), priority=-1)
result = (high.result(), client.gather(low))
""",
    ),
    Snippet(
        "persist-futures-of",
        "docs: Futures, futures_of a persisted collection",
        """
import dask.array as da
from dask.distributed import futures_of, wait

x = client.persist(da.ones(100, chunks=10))
futures = futures_of(x)
wait(futures)
result = (len(futures), all(f.status == "finished" for f in futures), int(x.sum().compute()))
""",
    ),
]
