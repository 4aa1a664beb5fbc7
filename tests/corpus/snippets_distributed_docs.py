"""More examples of the dask.distributed documentation pages (futures, locality, priority,
managing computation, task launching, coordination primitives, publish, actors, plugins,
diagnostics, logging, the API reference), written as there; see ``snippets.py`` for the rules."""

from __future__ import annotations

from .snippets import Snippet

SNIPPETS = [
    Snippet(
        "futures-submit-kwargs",
        "docs: Futures, Submit Tasks (keyword arguments)",
        """
def add(x, y=0):
    return x + y

future = client.submit(add, 1, y=2)
result = future.result()
""",
    ),
    Snippet(
        "futures-map-several-iterables",
        "API: Client.map (several iterables, zipped)",
        """
def add(x, y):
    return x + y

futures = client.map(add, range(5), range(10, 15))
result = client.gather(futures)
""",
    ),
    Snippet(
        "futures-map-keys",
        "API: Client.map(key=[...])",
        """
def inc(x):
    return x + 1

futures = client.map(inc, range(3), key=["corpus-map-a", "corpus-map-b", "corpus-map-c"])
result = ([f.key for f in futures], client.gather(futures))
""",
    ),
    Snippet(
        "futures-wait-first-completed",
        "API: wait(return_when='FIRST_COMPLETED')",
        """
import time
from dask.distributed import wait

def slow(x):
    time.sleep(x)
    return x

fast = client.submit(slow, 0)
later = client.submit(slow, 1)
done, not_done = wait([fast, later], return_when="FIRST_COMPLETED")
result = ([f.result() for f in done], len(not_done))
""",
    ),
    Snippet(
        "futures-wait-timeout",
        "API: wait(timeout=) raises TimeoutError",
        """
import time
from dask.distributed import wait

def slow():
    time.sleep(0.5)
    return "late"

future = client.submit(slow, pure=False)
try:
    wait([future], timeout=0.05)
    caught = None
except TimeoutError:
    caught = "TimeoutError"
result = (caught, future.result())
""",
    ),
    Snippet(
        "futures-result-timeout",
        "API: Future.result(timeout=)",
        """
import time

def slow():
    time.sleep(0.5)
    return "late"

future = client.submit(slow, pure=False)
try:
    future.result(timeout=0.05)
    caught = None
except TimeoutError:
    caught = "TimeoutError"
result = (caught, future.result(timeout=10))
""",
    ),
    Snippet(
        "futures-traceback",
        "docs: Futures, Exceptions (traceback)",
        """
import traceback

def div(x, y):
    return x / y

a = client.submit(div, 1, 0)
lines = traceback.format_tb(a.traceback())
result = (any("return x / y" in line for line in lines), type(a.exception()).__name__)
""",
    ),
    Snippet(
        "futures-retry",
        "API: Future.retry and Client.retry",
        """
import os, tempfile

marker = tempfile.mktemp()

def flaky(path):
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("first try fails")
    return "second try"

future = client.submit(flaky, marker)
first = (future.status, type(future.exception()).__name__)
future.retry()
second = future.result()
os.unlink(marker)
other = client.submit(flaky, marker, pure=False)
other.exception()
client.retry([other])
result = (first, second, other.result())
os.unlink(marker)
""",
    ),
    Snippet(
        "futures-client-cancel",
        "API: Client.cancel",
        """
import time

def slow(x):
    time.sleep(0.2)
    return x

futures = client.map(slow, range(4), pure=False)
client.cancel(futures)
result = [(f.status, f.cancelled()) for f in futures]
""",
    ),
    Snippet(
        "futures-scatter-broadcast",
        "API: Client.scatter(broadcast=True)",
        """
[future] = client.scatter([list(range(10))], broadcast=True)
result = (len(client.who_has([future])[future.key]), client.submit(sum, future).result())
""",
    ),
    Snippet(
        "futures-scatter-one-object-hash",
        "API: Client.scatter of one object, hash=",
        """
a = client.scatter(123)
b = client.scatter(123)
c = client.scatter(123, hash=False)
result = (a.key == b.key, a.key == c.key, a.result(), c.result())
""",
    ),
    Snippet(
        "futures-release",
        "API: Future.release",
        """
def inc(x):
    return x + 1

future = client.submit(inc, 1000)
future.result()
future.release()
result = client.submit(inc, 1000).result()
""",
    ),
    Snippet(
        "locality-submit-workers",
        "docs: Data Locality, User Control (submit(workers=))",
        """
from dask.distributed import get_worker

def where():
    return get_worker().address

workers = sorted(client.scheduler_info()["workers"])
futures = [client.submit(where, workers=[w], pure=False) for w in workers for _ in range(3)]
result = client.gather(futures) == [w for w in workers for _ in range(3)]
""",
    ),
    Snippet(
        "locality-map-workers",
        "docs: Data Locality, User Control (map(workers=) with one address)",
        """
from dask.distributed import get_worker

def where(i):
    return get_worker().address

worker = sorted(client.scheduler_info()["workers"])[-1]
result = set(client.gather(client.map(where, range(4), workers=worker))) == {worker}
""",
    ),
    Snippet(
        "locality-allow-other-workers",
        "docs: Data Locality, allow_other_workers=True",
        """
def inc(x):
    return x + 1

worker = sorted(client.scheduler_info()["workers"])[0]
futures = client.map(inc, range(4), workers=[worker], allow_other_workers=True)
result = client.gather(futures)
""",
    ),
    Snippet(
        "locality-scatter-workers",
        "docs: Data Locality, scatter(workers=)",
        """
worker = sorted(client.scheduler_info()["workers"])[0]
[future] = client.scatter([list(range(5))], workers=[worker])
result = (list(client.who_has([future])[future.key]) == [worker], future.result())
""",
    ),
    Snippet(
        "priority-annotate",
        "docs: Prioritizing Work (dask.annotate(priority=))",
        """
import dask
from dask import delayed

def inc(x):
    return x + 1

with dask.annotate(priority=10):
    x = delayed(inc)(1)
y = delayed(inc)(x)
result = (y.compute(), client.compute(y, priority=-5).result())
""",
    ),
    Snippet(
        "manage-compute-returns-future",
        "docs: Managing Computation, Client.compute (a future; sync=True)",
        """
from dask import delayed

x = delayed(sum)([1, 2, 3])
future = client.compute(x)
result = (type(future).__name__, future.result(), client.compute(x, sync=True))
""",
    ),
    Snippet(
        "manage-compute-list-gather",
        "docs: Managing Computation, compute a list, gather",
        """
import dask.array as da

x = da.arange(100, chunks=10)
futures = client.compute([x.sum(), x.max(), x.min()])
result = [int(v) for v in client.gather(futures)]
""",
    ),
    Snippet(
        "manage-dask-persist",
        "docs: Managing Computation, dask.persist with a default client",
        """
import dask
import dask.array as da

x = da.arange(100, chunks=10)
y, z = dask.persist(x + 1, x * 2)
result = (int(y.sum().compute()), int(z.max().compute()))
""",
    ),
    Snippet(
        "manage-persist-delayed",
        "docs: Managing Computation, persist a delayed value",
        """
from dask import delayed

def inc(x):
    return x + 1

x = client.persist(delayed(inc)(41))
result = (x.compute(), (x + 1).compute())
""",
    ),
    Snippet(
        "task-launch-queue-feed",
        "docs: Launch Tasks from Tasks, coordinating with a Queue",
        """
from dask.distributed import Queue

def consume(n):
    queue = Queue("corpus-feed")
    return sum(queue.get(timeout=10) for _ in range(n))

queue = Queue("corpus-feed")
for i in range(5):
    queue.put(i)
result = client.submit(consume, 5).result()
""",
    ),
    Snippet(
        "task-launch-variable-stop-flag",
        "docs: Launch Tasks from Tasks, a Variable to stop a long-running task",
        """
from dask.distributed import Variable

def run_until_stopped():
    stop = Variable("corpus-stop")
    while not stop.get(timeout=10):
        pass
    return "stopped"

stop = Variable("corpus-stop")
stop.set(False)
future = client.submit(run_until_stopped, pure=False)
stop.set(True)
result = future.result()
""",
    ),
    Snippet(
        "task-launch-map-inside-task",
        "docs: Launch Tasks from Tasks (map and gather inside a task)",
        """
from dask.distributed import get_client

def inc(x):
    return x + 1

def process(n):
    client = get_client()
    futures = client.map(inc, range(n))
    return sum(client.gather(futures))

result = client.submit(process, 10).result()
""",
    ),
    Snippet(
        "coordination-queue-batch",
        "API: Queue.get(batch=)",
        """
from dask.distributed import Queue

queue = Queue("corpus-batch")
for i in range(5):
    queue.put(i)
result = (queue.get(batch=2), queue.get(batch=True), queue.qsize())
""",
    ),
    Snippet(
        "coordination-variable-timeout",
        "API: Variable.get(timeout=) on a variable never set",
        """
from dask.distributed import Variable

try:
    Variable("corpus-never-set").get(timeout=0.1)
    result = None
except TimeoutError:
    result = "TimeoutError"
""",
    ),
    Snippet(
        "coordination-lock-held-elsewhere",
        "API: Lock.acquire(blocking=False, timeout=), locked()",
        """
from dask.distributed import Lock

def try_take(name):
    return Lock(name).acquire(blocking=False)

lock = Lock("corpus-held")
lock.acquire()
inside = (lock.locked(), client.submit(try_take, "corpus-held", pure=False).result())
timed_out = Lock("corpus-held").acquire(timeout=0.1)
lock.release()
result = (inside, timed_out, lock.locked())
""",
    ),
    Snippet(
        "coordination-semaphore-timeout",
        "API: Semaphore.acquire(timeout=), get_value, release",
        """
from dask.distributed import Semaphore

sem = Semaphore(max_leases=1, name="corpus-one-lease")
first = sem.acquire()
second = sem.acquire(timeout=0.1)
value = sem.get_value()
sem.release()
result = (first, second, value, sem.get_value())
""",
    ),
    Snippet(
        "coordination-event-wait-timeout",
        "API: Event.wait(timeout=) on an event never set",
        """
from dask.distributed import Event

event = Event("corpus-never-set-event")
result = (event.wait(timeout=0.1), event.is_set())
""",
    ),
    Snippet(
        "coordination-multilock",
        "API: MultiLock (several locks taken together)",
        """
from dask.distributed import MultiLock

def use(names):
    with MultiLock(names=names):
        return "held"

lock = MultiLock(names=["corpus-ml-a", "corpus-ml-b"])
lock.acquire()
blocked = MultiLock(names=["corpus-ml-b"]).acquire(timeout=0.1)
lock.release()
result = (blocked, client.submit(use, ["corpus-ml-a", "corpus-ml-b"]).result())
""",
    ),
    Snippet(
        "publish-datasets-mapping",
        "docs: Publish Datasets (client.datasets as a mapping)",
        """
def inc(x):
    return x + 1

client.datasets["corpus_y"] = client.submit(inc, 41)
present = "corpus_y" in client.datasets
value = client.datasets["corpus_y"].result()
del client.datasets["corpus_y"]
result = (present, value, "corpus_y" in client.datasets)
""",
    ),
    Snippet(
        "publish-persisted-collection",
        "docs: Publish Datasets (a persisted collection, got back and computed)",
        """
import dask.array as da

x = client.persist(da.arange(100, chunks=10))
client.publish_dataset(corpus_arr=x)
y = client.get_dataset("corpus_arr")
result = (int(y.sum().compute()), y.shape)
client.unpublish_dataset("corpus_arr")
""",
    ),
    Snippet(
        "publish-override-default",
        "API: publish_dataset(override=), get_dataset(default=)",
        """
client.publish_dataset(corpus_z=1)
try:
    client.publish_dataset(corpus_z=2)
    refused = None
except KeyError:
    refused = "KeyError"
client.publish_dataset(corpus_z=3, override=True)
value = client.get_dataset("corpus_z")
client.unpublish_dataset("corpus_z")
result = (refused, value, client.get_dataset("corpus_z", default="gone"))
""",
    ),
    Snippet(
        "actor-add",
        "docs: Actors (calling add(10))",
        """
class Counter:
    n = 0

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

    def add(self, x):
        self.n += x
        return self.n

future = client.submit(Counter, actor=True)
counter = future.result()
counter.increment().result()
result = (counter.add(10).result(), counter.n)
""",
    ),
    Snippet(
        "actor-passed-to-tasks",
        "docs: Actors (an actor given to tasks)",
        """
class Counter:
    n = 0

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n

def bump(counter):
    return counter.increment().result()

future = client.submit(Counter, actor=True)
counter = future.result()
client.gather([client.submit(bump, counter, pure=False) for _ in range(4)])
result = counter.n
""",
    ),
    Snippet(
        "plugins-worker-plugin",
        "docs: Plugins, a WorkerPlugin counting finished tasks",
        """
from dask.distributed import WorkerPlugin

class CountFinished(WorkerPlugin):
    name = "corpus-count-finished"

    def setup(self, worker):
        self.finished = 0

    def transition(self, key, start, finish, **kwargs):
        if finish == "memory":
            self.finished += 1

def count(dask_worker):
    return dask_worker.plugins["corpus-count-finished"].finished

def inc(x):
    return x + 1

client.register_plugin(CountFinished())
client.gather(client.map(inc, range(6), pure=False))
counts = client.run(count)
client.unregister_worker_plugin("corpus-count-finished")
result = sum(counts.values())
""",
    ),
    Snippet(
        "plugins-scheduler-plugin",
        "docs: Plugins, a SchedulerPlugin seeing transitions",
        """
from dask.distributed import SchedulerPlugin

class CountMemory(SchedulerPlugin):
    name = "corpus-count-memory"

    def __init__(self):
        self.keys = set()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory" and str(key).startswith("corpus-plug"):
            self.keys.add(key)

def seen(dask_scheduler):
    return sorted(dask_scheduler.plugins["corpus-count-memory"].keys)

def inc(x):
    return x + 1

client.register_plugin(CountMemory())
client.gather(client.map(inc, range(3), key=["corpus-plug-0", "corpus-plug-1", "corpus-plug-2"]))
result = client.run_on_scheduler(seen)
client.unregister_scheduler_plugin("corpus-count-memory")
""",
    ),
    Snippet(
        "plugins-upload-file",
        "docs: Plugins, UploadFile",
        """
import os, tempfile
from dask.distributed import UploadFile

directory = tempfile.mkdtemp()
path = os.path.join(directory, "corpus_uploaded_module.py")
with open(path, "w") as f:
    f.write("def answer():\\n    return 42\\n")

def use_module():
    import corpus_uploaded_module
    return corpus_uploaded_module.answer()

client.register_plugin(UploadFile(path))
result = client.submit(use_module, pure=False).result()
""",
    ),
    Snippet(
        "client-run-dask-worker",
        "API: Client.run (dask_worker= argument, workers=)",
        """
def address_of(dask_worker):
    return dask_worker.address

workers = sorted(client.scheduler_info()["workers"])
everywhere = client.run(address_of)
one = client.run(address_of, workers=[workers[0]])
result = (all(k == v for k, v in everywhere.items()), list(one) == [workers[0]])
""",
    ),
    Snippet(
        "client-current",
        "API: Client.current, default_client inside as_current",
        """
from dask.distributed import Client, default_client

with client.as_current():
    result = (Client.current() is client, default_client() is client)
""",
    ),
    Snippet(
        "logging-worker-log-event",
        "docs: Logging, structured events from a task (get_worker().log_event)",
        """
import time
from dask.distributed import get_worker

def work(x):
    get_worker().log_event("corpus-worker-topic", {"x": x})
    return x

client.gather(client.map(work, range(3)))
deadline = time.monotonic() + 5
while len(client.get_events("corpus-worker-topic")) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
result = sorted(msg["x"] for _, msg in client.get_events("corpus-worker-topic"))
""",
    ),
    Snippet(
        "logging-subscribe-topic",
        "API: Client.subscribe_topic",
        """
import threading

received = []
arrived = threading.Event()

def handler(event):
    timestamp, msg = event
    received.append(msg)
    arrived.set()

client.subscribe_topic("corpus-subscribed", handler)
for _ in range(100):  # the subscription may reach the scheduler after the first event
    client.log_event("corpus-subscribed", {"hello": "world"})
    if arrived.wait(0.05):
        break
client.unsubscribe_topic("corpus-subscribed")
result = received[0]
""",
    ),
    Snippet(
        "diagnostics-get-task-stream",
        "docs: Diagnosing Performance, get_task_stream",
        """
from dask.distributed import get_task_stream

def inc(x):
    return x + 1

with get_task_stream() as ts:
    client.gather(client.map(inc, range(5), pure=False))
result = (len(ts.data), all({"key", "worker", "startstops"} <= set(d) for d in ts.data))
""",
    ),
    Snippet(
        "efficiency-scatter-then-map",
        "docs: Efficiency, scatter large data once and pass the future",
        """
import numpy as np

data = np.arange(100_000)
[big] = client.scatter([data])

def nth_sum(array, n):
    return int(array[::n].sum())

result = client.gather(client.map(nth_sum, [big] * 4, [1, 2, 3, 4]))
""",
    ),
    Snippet(
        "async-await-client",
        "dask-examples: applications/async-await.ipynb (an asynchronous Client)",
        """
import asyncio
from dask.distributed import Client

address = client.scheduler_info()["address"]

def inc(x):
    return x + 1

async def main():
    async with Client(address, security=client.security, asynchronous=True) as aclient:
        future = aclient.submit(inc, 1)
        one = await future
        futures = aclient.map(inc, range(3))
        many = await aclient.gather(futures)
        return one, many

result = asyncio.run(main())
""",
    ),
    Snippet(
        "async-as-completed",
        "dask-examples: applications/async-await.ipynb (async for over as_completed)",
        """
import asyncio
from dask.distributed import Client, as_completed

address = client.scheduler_info()["address"]

def inc(x):
    return x + 1

async def main():
    async with Client(address, security=client.security, asynchronous=True) as aclient:
        futures = aclient.map(inc, range(5))
        return sorted([await future async for future in as_completed(futures)])

result = asyncio.run(main())
""",
    ),
    Snippet(
        "futures-done-callback-after-done",
        "API: Future.add_done_callback on a future already done",
        """
import threading

def inc(x):
    return x + 1

future = client.submit(inc, 1)
future.result()
called = threading.Event()
seen = []

def callback(f):
    seen.append((f.status, f.result()))
    called.set()

future.add_done_callback(callback)
called.wait(10)
result = seen
""",
    ),
    Snippet(
        "futures-done-callback-on-error",
        "API: Future.add_done_callback when the task fails",
        """
import threading

def fail():
    raise ValueError("no")

future = client.submit(fail, pure=False)
called = threading.Event()
seen = []

def callback(f):
    seen.append((f.status, type(f.exception()).__name__))
    called.set()

future.add_done_callback(callback)
called.wait(10)
result = seen
""",
    ),
    Snippet(
        "futures-gather-errors-skip",
        "API: Client.gather(errors='skip')",
        """
def maybe_fail(x):
    if x == 2:
        raise ValueError(x)
    return x

futures = client.map(maybe_fail, range(5))
result = client.gather(futures, errors="skip")
""",
    ),
    Snippet(
        "futures-as-completed-raise-errors",
        "API: as_completed(raise_errors=False, with_results=True)",
        """
from dask.distributed import as_completed

def maybe_fail(x):
    if x == 1:
        raise ValueError(x)
    return x

futures = client.map(maybe_fail, range(3))
outcomes = []
for future, value in as_completed(futures, with_results=True, raise_errors=False):
    outcomes.append(value[0].__name__ if future.status == "error" else value)
result = sorted(outcomes, key=str)
""",
    ),
    Snippet(
        "futures-as-completed-update-count",
        "API: as_completed.update, count, is_empty",
        """
from dask.distributed import as_completed

def inc(x):
    return x + 1

ac = as_completed()
empty_before = ac.is_empty()
ac.update(client.map(inc, range(4)))
counted = ac.count()
values = sorted(f.result() for f in ac)
result = (empty_before, counted, values, ac.is_empty(), ac.count())
""",
    ),
    Snippet(
        "futures-type",
        "API: Future.type once the result is known",
        """
def inc(x):
    return x + 1

future = client.submit(inc, 1)
future.result()
result = future.type.__name__
""",
    ),
    Snippet(
        "futures-fire-and-forget-side-effect",
        "docs: Futures, fire_and_forget (the work happens with no future kept)",
        """
from dask.distributed import Queue, fire_and_forget

def report(x):
    Queue("corpus-fire").put(x * 10)

fire_and_forget(client.submit(report, 4, pure=False))
result = Queue("corpus-fire").get(timeout=10)
""",
    ),
    Snippet(
        "worker-current-task",
        "API: Worker.get_current_task, inside a task",
        """
from dask.distributed import get_worker

def whoami():
    return get_worker().get_current_task()

future = client.submit(whoami, key="corpus-whoami")
result = future.result()
""",
    ),
    Snippet(
        "client-nthreads",
        "API: Client.nthreads / ncores",
        """
result = (sorted(client.nthreads().values()), sorted(client.ncores().values()))
""",
    ),
    Snippet(
        "client-scheduler-info-workers",
        "API: Client.scheduler_info (each worker's nthreads)",
        """
info = client.scheduler_info()
result = (len(info["workers"]), sorted(w["nthreads"] for w in info["workers"].values()))
""",
    ),
    Snippet(
        "client-run-coroutine",
        "API: Client.run of an async function (awaited on each worker)",
        """
import asyncio

async def answer():
    await asyncio.sleep(0.01)
    return 42

result = sorted(client.run(answer).values())
""",
    ),
    Snippet(
        "client-run-on-scheduler-coroutine",
        "API: Client.run_on_scheduler of an async function",
        """
import asyncio

async def answer(dask_scheduler=None):
    await asyncio.sleep(0.01)
    return dask_scheduler is not None

result = client.run_on_scheduler(answer)
""",
    ),
    Snippet(
        "logging-events-many-topics",
        "API: Client.log_event to several topics, get_events of all",
        """
import time

client.log_event(["corpus-many-a", "corpus-many-b"], {"n": 1})
deadline = time.monotonic() + 5
while time.monotonic() < deadline and not client.get_events("corpus-many-b"):
    time.sleep(0.01)
everything = client.get_events()
result = (
    [m for _, m in client.get_events("corpus-many-a")],
    [m for _, m in client.get_events("corpus-many-b")],
    {"corpus-many-a", "corpus-many-b"} <= set(everything),
)
""",
    ),
    Snippet(
        "coordination-queue-get-timeout",
        "API: Queue.get(timeout=) on an empty queue",
        """
from dask.distributed import Queue

try:
    Queue("corpus-empty").get(timeout=0.1)
    result = None
except TimeoutError:
    result = "TimeoutError"
""",
    ),
    Snippet(
        "coordination-variable-future-in-task",
        "docs: Coordination Primitives, a Variable holding a future read by a task",
        """
from dask.distributed import Variable

def inc(x):
    return x + 1

def read_and_add(name):
    return Variable(name).get().result() + 100

var = Variable("corpus-var-future")
var.set(client.submit(inc, 1))
result = client.submit(read_and_add, "corpus-var-future", pure=False).result()
var.delete()
""",
    ),
    Snippet(
        "coordination-lock-async",
        "API: Lock as an async context manager on an asynchronous client",
        """
import asyncio
from dask.distributed import Client, Lock

address = client.scheduler_info()["address"]

async def main():
    async with Client(address, security=client.security, asynchronous=True) as aclient:
        lock = Lock("corpus-async-lock")
        async with lock:
            held = await lock.locked()
        return held, await lock.locked()

result = asyncio.run(main())
""",
    ),
    Snippet(
        "actor-method-error",
        "docs: Actors (an exception in a method reaches the caller)",
        """
class Account:
    def __init__(self):
        self.balance = 0

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        return self.balance

future = client.submit(Account, actor=True)
account = future.result()
try:
    account.withdraw(10).result()
except ValueError as e:
    result = str(e)
""",
    ),
    Snippet(
        "delayed-on-futures-key-name",
        "API: Client.compute of delayed with dask_key_name, optimize_graph=False",
        """
from dask import delayed

def inc(x):
    return x + 1

x = delayed(inc)(1, dask_key_name="corpus-named")
future = client.compute(x, optimize_graph=False)
result = (future.key, future.result())
""",
    ),
    Snippet(
        "compute-as-completed-delayed",
        "docs: Futures, as_completed over computed collections",
        """
from dask import delayed
from dask.distributed import as_completed

def square(x):
    return x * x

futures = client.compute([delayed(square)(i) for i in range(5)])
result = sorted(f.result() for f in as_completed(futures))
""",
    ),
    Snippet(
        "compute-retries",
        "API: Client.compute(retries=)",
        """
import os, tempfile
from dask import delayed

marker = tempfile.mktemp()

def flaky(path):
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("first try fails")
    return "second try"

result = client.compute(delayed(flaky)(marker), retries=1).result()
os.unlink(marker)
""",
    ),
    Snippet(
        "futures-scatter-direct",
        "API: Client.scatter(direct=True), gather(direct=True)",
        """
[future] = client.scatter([list(range(10))], direct=True)
result = (client.gather([future], direct=True), client.submit(sum, future).result())
""",
    ),
    Snippet(
        "futures-map-batch-size-fifo",
        "API: Client.map(batch_size=), submit(fifo_timeout=)",
        """
def inc(x):
    return x + 1

futures = client.map(inc, range(20), batch_size=5)
one = client.submit(inc, 100, fifo_timeout="100ms")
result = (client.gather(futures), one.result())
""",
    ),
    Snippet(
        "publish-positional-name",
        "API: Client.publish_dataset(value, name=)",
        """
def inc(x):
    return x + 1

client.publish_dataset(client.submit(inc, 9), name="corpus_named")
value = client.get_dataset("corpus_named").result()
client.unpublish_dataset("corpus_named")
result = value
""",
    ),
    Snippet(
        "manage-persist-workers-priority",
        "API: Client.persist(workers=, allow_other_workers=, priority=)",
        """
import dask.array as da

worker = sorted(client.scheduler_info()["workers"])[0]
x = client.persist(da.ones(40, chunks=10), workers=[worker], priority=5)
holders = {w for ws in client.who_has(x).values() for w in ws}
result = (holders == {worker}, int(x.sum().compute()))
""",
    ),
    Snippet(
        "client-run-on-error-return",
        "API: Client.run(on_error='return')",
        """
def fail():
    raise ValueError("from a worker")

answers = client.run(fail, on_error="return")
result = sorted(type(a).__name__ for a in answers.values())
""",
    ),
    Snippet(
        "logging-worker-and-scheduler-logs",
        "docs: Logging, get_worker_logs / get_scheduler_logs",
        """
worker_logs = client.get_worker_logs()
scheduler_logs = client.get_scheduler_logs()
result = (
    len(worker_logs),
    all(isinstance(level, str) and isinstance(line, str) for level, line in scheduler_logs),
)
""",
    ),
    Snippet(
        "client-get-task-stream-method",
        "API: Client.get_task_stream(start=)",
        """
import time

def inc(x):
    return x + 1

start = time.time()
client.gather(client.map(inc, range(4), pure=False))
records = client.get_task_stream(start=start)
result = (len(records), {r["status"] for r in records})
""",
    ),
    Snippet(
        "task-launch-secede-long-running",
        "docs: Launch Tasks from Tasks (a long-running task secedes, then submits)",
        """
from dask.distributed import get_client, secede

def inc(x):
    return x + 1

def long_running(n):
    client = get_client()
    secede()
    total = 0
    for i in range(n):
        total += client.submit(inc, i).result()
    return total

result = client.gather(client.map(long_running, [3, 4]))
""",
    ),
    Snippet(
        "asynchronous-sync-client-awaits",
        "docs: Asynchronous Operation (a blocking client, asynchronous=True per call, client.sync)",
        """
async def f():
    future = client.submit(lambda x: x + 1, 10)
    result = await client.gather(future, asynchronous=True)
    return result

result = client.sync(f)
""",
    ),
    Snippet(
        "asynchronous-compute-collection",
        "docs: Asynchronous Operation (await client.compute of a dask array)",
        """
import asyncio
import dask.array as da
from dask.distributed import Client

address = client.scheduler_info()["address"]

async def main():
    async with Client(address, security=client.security, asynchronous=True) as aclient:
        arr = da.ones((100, 100), chunks=(100, 10))
        mean = await aclient.compute(arr.mean())
        persisted = aclient.persist(arr.sum(axis=0))
        total = await aclient.compute(persisted.sum())
        return float(mean), float(total)

result = asyncio.run(main())
""",
    ),
    Snippet(
        "asynchronous-await-client",
        "docs: Asynchronous Operation (client = await Client(...), await future, close)",
        """
import asyncio
from dask.distributed import Client

address = client.scheduler_info()["address"]

async def f():
    aclient = await Client(address, security=client.security, asynchronous=True)
    future = aclient.submit(lambda x: x + 1, 10)
    result = await future
    await aclient.close()
    return result

result = asyncio.run(f())
""",
    ),
    Snippet(
        "locality-scatter-range",
        "docs: Data Locality (futures = client.scatter(range(10)))",
        """
futures = client.scatter(range(10))
result = (type(futures).__name__, len(futures), client.gather(futures))
""",
    ),
    Snippet(
        "efficiency-leave-data-on-cluster",
        "docs: Efficiency (submit on a future rather than pulling its result)",
        """
import numpy as np

x = client.submit(np.random.random, (1000, 1000))
result = (type(x).__name__, client.submit(lambda a: a.shape, x).result())
""",
    ),
    Snippet(
        "efficiency-larger-tasks",
        "docs: Efficiency, Use larger tasks (partition_all into chunks)",
        """
from tlz import partition_all

def f(x):
    return x * 2

def f_many(chunk):
    return [f(x) for x in chunk]

chunks = list(partition_all(100, range(1000)))  # dask's map refuses iterators now
futures = client.map(f_many, chunks)
result = (len(futures), sum(sum(part) for part in client.gather(futures)))
""",
    ),
    Snippet(
        "resources-annotate-submit",
        "docs: Worker Resources / Data Locality (dask.annotate around submit)",
        """
import dask
from dask.distributed import get_worker

def where():
    return get_worker().address

worker = sorted(client.scheduler_info()["workers"])[-1]
with dask.annotate(workers=[worker]):
    futures = [client.submit(where, pure=False) for _ in range(3)]
result = set(client.gather(futures)) == {worker}
""",
    ),
    Snippet(
        "priority-persist-options",
        "docs: Prioritizing Work (x.persist(priority=), persist(fifo_timeout=))",
        """
import dask
import dask.array as da

x = da.arange(100, chunks=10)
y = x.persist(priority=10)
z = (x + 1).persist(fifo_timeout="10 minutes")
with dask.annotate(priority=-10):
    w = (x * 2).persist()
result = (int(y.sum().compute()), int(z.sum().compute()), int(w.sum().compute()))
""",
    ),
    Snippet(
        "diagnostics-progress",
        "docs: Diagnosing Performance, progress outside a notebook",
        """
import contextlib, io
from dask.distributed import progress, wait

def inc(x):
    return x + 1

futures = client.map(inc, range(5))
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    shown = progress(futures)
wait(futures)
result = (shown, client.gather(futures))
""",
    ),
    Snippet(
        "futures-replicate",
        "API: Client.replicate(n=)",
        """
[future] = client.scatter([list(range(10))])
client.replicate([future], n=2)
result = len(client.who_has([future])[future.key])
""",
    ),
    Snippet(
        "futures-cancelled-result-raises",
        "docs: Futures, Cancel (result() of a cancelled future raises CancelledError)",
        """
import time
from dask.distributed import CancelledError

def slow():
    time.sleep(0.3)
    return 1

future = client.submit(slow, pure=False)
future.cancel()
try:
    future.result(timeout=10)
    result = None
except CancelledError:
    result = ("CancelledError", future.cancelled())
""",
    ),
    Snippet(
        "futures-cancel-finished",
        "API: Client.cancel of a finished future",
        """
def inc(x):
    return x + 1

future = client.submit(inc, 5000)
future.result()
client.cancel([future])
result = (future.status, future.cancelled())
""",
    ),
    Snippet(
        "futures-wait-with-errors",
        "API: wait does not raise for failed futures",
        """
from dask.distributed import wait

def maybe_fail(x):
    if x:
        raise ValueError(x)
    return x

futures = client.map(maybe_fail, [0, 1])
done, not_done = wait(futures)
result = (len(done), len(not_done), [f.status for f in futures])
""",
    ),
    Snippet(
        "futures-as-completed-timeout",
        "API: as_completed(timeout=) raises TimeoutError",
        """
import time
from dask.distributed import as_completed

def slow():
    time.sleep(0.5)
    return 1

futures = [client.submit(slow, pure=False)]
try:
    for future in as_completed(futures, timeout=0.05):
        pass
    result = None
except TimeoutError:
    result = "TimeoutError"
client.gather(futures)
""",
    ),
    Snippet(
        "client-get-many-keys",
        "API: Client.get with nested keys and sync=False",
        """
from operator import add

def inc(x):
    return x + 1

dsk = {"x": 1, "y": (inc, "x"), "z": (add, "y", 10)}
nested = client.get(dsk, [["x", "y"], "z"])
futures = client.get(dsk, ["y", "z"], sync=False)
result = (nested, [type(f).__name__ for f in futures], client.gather(futures))
""",
    ),
    Snippet(
        "futures-map-key-prefix",
        "API: Client.map(key='prefix')",
        """
def inc(x):
    return x + 1

futures = client.map(inc, range(3), key="corpus-prefix")
result = ([f.key.startswith("corpus-prefix-") for f in futures], client.gather(futures))
""",
    ),
    Snippet(
        "client-get-versions",
        "API: Client.get_versions(check=True)",
        """
versions = client.get_versions(check=True)
result = (sorted(versions), len(versions["workers"]), sorted(versions["client"]["host"]))
""",
    ),
]
