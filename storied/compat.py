"""What storied does not do of dask.distributed's public API, and why.

``docs/dask-compatibility.md`` lists every public name of dask.distributed's ``Client``,
``Future``, ``LocalCluster`` and top-level module with its status in storied; the names it marks
*not supported* are the ones below. Reaching for one raises ``NotImplementedError`` that names
the page, never a bare ``AttributeError`` that looks like a typo.
"""

from __future__ import annotations

PAGE = "docs/dask-compatibility.md"

#: owner ("storied" for the top-level module) -> name -> why it is not supported
NOT_SUPPORTED: dict[str, dict[str, str]] = {
    "storied": {
        "Adaptive": "adaptive scaling is `LocalCluster.adapt`; there is no separate Adaptive class",
        "BaseActorFuture": "use `ActorFuture`",
        "CompatibleExecutor": "use `client.get_executor()`",
        "CondaInstall": "no package-installing worker plugins: install the environment on every host",
        "InstallPlugin": "no package-installing worker plugins: install the environment on every host",
        "Nanny": "storied's nanny is started by `storied worker` and `LocalCluster`, not as a Python class",
        "NannyPlugin": "no nanny plugins",
        "PipInstall": "no package-installing worker plugins: install the environment on every host",
        "Reschedule": "a task cannot ask to be rescheduled",
        "SSHCluster": "start `storied scheduler` and `storied worker` on each host (README, Across machines)",
        "SpecCluster": "only `LocalCluster`, and the CLI for other deployments",
        "Status": "status is a plain string (`client.status`, `worker.status`)",
        "SubprocessCluster": "`LocalCluster(processes=True)` runs workers in subprocesses",
        "UploadDirectory": "upload single files with `client.upload_file`",
        "connect": "internal to Dask's comm layer; storied's wire protocol is its own",
        "dask": "not a name of storied: `import dask` itself (the `storied[dask]` extra)",
        "get_task_metadata": "not yet: see issue 'See the record'",
        "print": "print from tasks goes to the worker's stdout",
        "rpc": "internal to Dask's comm layer",
        "span": "use events (`log_event`) to mark phases of work",
        "sync": "use `client.sync`",
        "warn": "warnings from tasks go to the worker's log",
        "widgets": "no Jupyter widgets yet",
    },
    "Client": {
        "amm": "no active memory manager",
        "benchmark_hardware": "use bench/ (side-by-side benchmarks)",
        "call_stack": "no call-stack sampling of running tasks",
        "dump_cluster_state": "the ledger (`LocalCluster(ledger=...)`, `storied scheduler --ledger`) keeps the whole history for after the fact",
        "forward_logging": "worker logs are captured on the record: `client.get_worker_logs()`, `storied logs --ledger`",
        "get_metadata": "use a `Variable` or a published dataset",
        "loop": "the client's event loop is internal",
        "nbytes": "not yet",
        "normalize_collection": "persist collections with `client.persist` instead",
        "processing": "not yet: the dashboard's Status page shows what each worker is doing",
        "profile": "no statistical profiler; `bench/profile.py` samples a cluster with py-spy",
        "register_worker_callbacks": "register a `WorkerPlugin` with `setup()` instead",
        "set_metadata": "use a `Variable` or a published dataset",
        "start": "a client connects when made; `await Client(..., asynchronous=True)` for asynchronous use",
        "unforward_logging": "worker logs are captured on the record",
        "write_scheduler_file": "share the address (`cluster.scheduler_address`) and the token",
    },
    "Future": {
        "bind_client": "an unpickled future binds to its side's client on first use",
        "executor": "use `future.client`",
        "substitute": "futures are dask graph inputs through `__dask_future__`, not TaskRef",
    },
    "LocalCluster": {
        "called_from_running_loop": "internal to Dask",
        "from_name": "clusters are not looked up by name",
        "get_logs": "`client.get_scheduler_logs()` and `client.get_worker_logs()`; the ledger keeps them",
        "name": "clusters have no name",
        "new_worker_spec": "no worker specs: `scale(n)` starts workers of the cluster's shape",
        "observed": "internal to Dask's adaptive scaling",
        "plan": "internal to Dask's adaptive scaling",
        "requested": "internal to Dask's adaptive scaling",
        "start_worker": "use `scale(n)`",
        "sync": "internal to Dask",
    },
}


class NotSupportedError(NotImplementedError, AttributeError):
    """A dask.distributed name storied does not support. Also an AttributeError, so that
    ``hasattr`` and ``getattr(obj, name, default)`` still answer as for any missing name."""


def missing(owner: str, name: str) -> AttributeError:
    """The error to raise for ``owner.name``, which does not exist: a ``NotSupportedError``
    naming the page for a Dask name storied does not support, else the usual AttributeError."""
    reason = NOT_SUPPORTED.get(owner, {}).get(name)
    if reason is not None:
        return NotSupportedError(
            f"{owner}.{name} (from dask.distributed) is not supported by storied: {reason}. "
            f"See {PAGE} for what storied supports and what to use instead."
        )
    kind = "module 'storied'" if owner == "storied" else f"{owner!r} object"
    return AttributeError(f"{kind} has no attribute {name!r}")
