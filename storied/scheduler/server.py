"""The scheduler's I/O shell: connections, streams, plugins and the record.

Task logic lives in ``SchedulerState``; this module turns messages into its stimuli, sends the
messages it returns, and writes admin events and logs to the record.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from storied import config
from storied.comm import Comm, CommClosedError, Security
from storied.comm.core import configured_listener
from storied.comm.stream import Stream
from storied.dashboard.app import Dashboard, parse_dashboard_address, serve_scheduler
from storied.loop import call_on_loop
from storied.plugin import (
    PLUGIN_ERRORS_TOPIC,
    PluginErrors,
    SchedulerPlugin,
    call_plugin_hook,
    finish_plugin_hook,
    plugin_name,
    run_plugin_hook,
    run_setup_hook,
)
from storied.protocol.serialize import pickle_dumps, pickle_loads
from storied.record import (
    LogRecordEntry,
    NoRecord,
    Record,
    check_topics,
    pack_event,
    unpack_msg,
)
from storied.record.events import (
    check_event_size,
    configured_max_event_size,
    fit_event,
    pack_msg,
)
from storied.record.ledger import Ledger
from storied.resources import check_resources
from storied.scheduler.coalesce import coalesce_free_keys
from storied.scheduler.extensions import SchedulerExtension, default_extensions
from storied.scheduler.failures import record_failure
from storied.scheduler.manage import RETIRED
from storied.scheduler.nannies import Nannies
from storied.scheduler.state import DEFAULT_FIFO_TIMEOUT, Effects, SchedulerState, TaskSpec

logger = logging.getLogger("storied.scheduler")
T = TypeVar("T")


#: what a worker status means for its tasks, for the log
_STATUS_MEANS = {
    "running": "it is sent new tasks again",
    "paused": "it is sent no new tasks; those it has not started may be stolen",
}


def _stimulus(prefix: str) -> str:
    return f"{prefix}-{time.time()}"


class _WorkerLink:
    __slots__ = ("address", "last_seen", "memory_limit", "name", "nanny", "pid", "stream")

    def __init__(
        self, address: str, name: str, pid: int | None, stream: Stream, nanny: str | None = None
    ) -> None:
        self.address, self.name, self.pid, self.stream = address, name, pid, stream
        #: the id of the nanny supervising the worker's process, if any
        self.nanny = nanny
        self.last_seen = time.monotonic()
        #: the worker's memory limit in bytes, None for none (as it said when it registered)
        self.memory_limit: int | None = None


class Scheduler:
    """Tracks every task through its life and places it on workers; keeps the record."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        security: Security | None = None,
        ledger: str | os.PathLike[str] | None = None,
        transition_log_length: int | None = None,
        events_per_topic: int | None = None,
        log_length: int | None = None,
        allowed_failures: int | None = None,
        worker_saturation: float | str | None = None,
        worker_ttl: float | str | None = None,
        retain: float | str | None = None,
        dashboard_address: str | int | None = None,
        insecure: bool = False,
    ) -> None:
        """``insecure=True`` allows listening beyond loopback without a token or TLS."""
        self.host = host
        self.insecure = insecure
        #: where the dashboard listens (None: no dashboard); ``dashboard`` once it serves
        self._dashboard_address = parse_dashboard_address(dashboard_address, host)
        self.dashboard: Dashboard | None = None
        self.port = port
        self.security = security or Security()
        self.id = f"Scheduler-{uuid.uuid4()}"
        self._ledger_path = ledger
        self._retain = config.parse_timedelta(
            retain if retain is not None else config.get("scheduler.retain")
        )
        self._record_options = {
            "transition_log_length": transition_log_length
            or config.get("scheduler.transition-log-length"),
            "events_per_topic": events_per_topic or config.get("scheduler.events-per-topic"),
            "event_bytes_per_topic": config.parse_bytes(config.get("events.max-bytes-per-topic")),
            "log_length": log_length or config.get("scheduler.log-length"),
            "execution_log_length": config.get("scheduler.execution-log-length"),
        }
        self.allowed_failures = (
            allowed_failures
            if allowed_failures is not None
            else config.get("scheduler.allowed-failures")
        )
        self.worker_saturation = _saturation(
            worker_saturation
            if worker_saturation is not None
            else config.get("scheduler.worker-saturation")
        )
        self.worker_backlog = config.parse_timedelta(config.get("scheduler.worker-backlog")) or 0.0
        safeguard_lineage = config.parse_timedelta(config.get("scheduler.safeguard-lineage"))
        #: seconds of compute an awaited result must stand for to get a second copy (inf: never)
        self.safeguard_lineage = math.inf if safeguard_lineage is None else safeguard_lineage
        self.worker_ttl = config.parse_timedelta(
            worker_ttl if worker_ttl is not None else config.get("scheduler.worker-ttl")
        )
        #: how long a question to every worker (a story, logs) waits for each one's answer
        self.worker_reply_timeout = config.parse_timedelta(
            config.get("scheduler.worker-reply-timeout")
        )
        self.workers: dict[str, _WorkerLink] = {}
        self.nannies = Nannies(self)
        self.clients: dict[str, Stream] = {}
        self.subscriptions: defaultdict[str, set[str]] = defaultdict(set)
        self.plugins: dict[str, SchedulerPlugin] = {}
        self.plugin_errors = PluginErrors(logger)
        self.extensions: dict[str, SchedulerExtension] = {}
        self._extension_handlers: dict[str, Callable[..., Any]] = {}
        self.worker_plugins: dict[str, bytes] = {}
        self.client_grace = config.parse_timedelta(config.get("scheduler.client-grace")) or 0.0
        self._client_removals: dict[str, asyncio.Task[None]] = {}
        self._clients_leaving: set[str] = set()
        self.status = "created"
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.record: Record
        self.state: SchedulerState

    def __repr__(self) -> str:
        return f"<Scheduler {self.address if self.status == 'running' else ''} {self.status}>"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Scheduler:
        self.loop = asyncio.get_running_loop()
        self._listener = configured_listener(
            f"tcp://{self.host}:{self.port}",
            self._handle_comm,
            self.security,
            insecure=self.insecure,
        )
        await self._listener.start()
        self.port = self._listener.port
        # no await from here to "running": connections need the record and state to exist
        try:
            self.record = Record(
                "scheduler",
                ledger=self._open_ledger(),
                run_info={"address": self.address, "id": self.id},
                run_in_owner=partial(call_on_loop, self.loop),
                **self._record_options,
            )
        except BaseException:  # the ledger is held by another scheduler, damaged, read-only...
            await self._listener.close()
            raise
        self._log_handler = self.record.log_handler()
        self._log_handler.attach("scheduler")
        recorder = self.record if config.get("scheduler.record-transitions") else NoRecord()
        self.state = SchedulerState(
            recorder,
            self.allowed_failures,
            worker_saturation=self.worker_saturation,
            worker_backlog=self.worker_backlog,
            safeguard_lineage=self.safeguard_lineage,
        )
        self.status = "running"
        for name, extension in default_extensions(self).items():
            self.add_extension(name, extension)
        self._spawn(self._housekeeping())
        logger.info("Scheduler at %s", self.address)
        if self.record.durable:
            logger.info("History is kept in the ledger %s", self.record.ledger_path)
        else:
            logger.info("History is kept in memory only: it ends with this scheduler")
        if self._dashboard_address is not None:
            self.dashboard = await serve_scheduler(self, self._dashboard_address)
            if self.dashboard is not None:
                logger.info("Dashboard at %s", self.dashboard.link)
        return self

    def _open_ledger(self) -> Ledger | None:
        path = self._ledger_path or config.get("scheduler.ledger")
        if not path:
            return None
        ledger_config = config.get("ledger")
        return Ledger(
            Path(path).expanduser(),
            queue_size=ledger_config["queue-size"],
            batch_size=ledger_config["batch-size"],
            flush_interval=config.parse_timedelta(ledger_config["flush-interval"]) or 0.05,
            index_interval=config.parse_timedelta(ledger_config["index-interval"]) or 0.0,
            retain=self._retain,
        )

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.start().__await__()

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def tasks(self) -> dict[str, Any]:
        """Every task the scheduler knows, by key (as ``dask_scheduler.tasks``)."""
        return self.state.tasks

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        if self.status in ("closing", "closed"):
            return
        if self.status == "created":  # never listened (its start was refused): nothing runs
            self.status = "closed"
            return
        self.status = "closing"
        logger.info("Scheduler %s closing", self.address)
        for name, plugin in list(self.plugins.items()):
            await run_plugin_hook(self.plugin_errors, name, plugin.close)
        self._report_plugin_errors()
        for link in list(self.workers.values()):
            link.stream.send({"op": "close", "reason": "scheduler-close"})
            link.stream.batched.flush()
        for stream in list(self.clients.values()):
            stream.batched.flush()
        await self._listener.close()
        if self.dashboard is not None:
            await self.dashboard.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._log_handler.detach()
        await self.record.close_in_thread()
        self.status = "closed"

    async def finished(self) -> None:
        while self.status != "closed":
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ connections

    async def _handle_comm(self, comm: Comm) -> None:
        msg = await comm.read()
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "register-worker":
            await self._serve_worker(comm, msg)
        elif op == "register-nanny":
            await self.nannies.serve(comm, msg)
        elif op == "register-client":
            await self._serve_client(comm, msg)
        elif op == "identity":
            await comm.send(self.identity())
        else:
            logger.warning(
                "Closing connection from %s: unexpected first message %r", comm.peer_address, op
            )

    async def _serve_worker(self, comm: Comm, msg: dict[str, Any]) -> None:
        address, name, nthreads = msg.get("address"), msg.get("name"), msg.get("nthreads")
        try:
            resources = check_resources(msg.get("resources") or {}, "worker resources")
        except (TypeError, ValueError):
            resources = None
        if not isinstance(address, str) or not isinstance(nthreads, int) or resources is None:
            logger.warning("Refusing malformed worker registration from %s", comm.peer_address)
            return
        if address in self.workers:
            await comm.send({"status": "error", "message": f"worker {address} already registered"})
            return
        name = str(name if name is not None else address)
        stream = Stream(comm, self._worker_handlers(address), f"stream from worker {address}")
        stream.batched.coalesce = coalesce_free_keys
        nanny = msg.get("nanny")
        link = _WorkerLink(
            address, name, msg.get("pid"), stream, nanny if isinstance(nanny, str) else None
        )
        memory_limit = msg.get("memory_limit")
        link.memory_limit = memory_limit if isinstance(memory_limit, int) else None
        self.workers[address] = link
        await comm.send(
            {
                "status": "OK",
                "durable": self.record.durable,
                "silence_timeout": self.worker_ttl,
                "plugins": [{"plugin": p, "name": n} for n, p in self.worker_plugins.items()],
            }
        )
        stimulus_id = _stimulus("add-worker")
        status = "paused" if msg.get("status") == "paused" else "running"
        self._apply(
            self.state.add_worker(address, name, nthreads, stimulus_id, resources, status=status)
        )
        logger.info(
            "Register worker %s (name: %s, threads: %d, resources: %s)",
            address,
            name,
            nthreads,
            resources or "none",
        )
        added: dict[str, Any] = {
            "action": "add-worker",
            "worker": address,
            "name": name,
            "nthreads": nthreads,
        }
        if resources:
            added["resources"] = resources
        self.log_event(["all", address], added)
        for plugin_key, plugin in list(self.plugins.items()):
            self._run_hook(plugin_key, plugin.add_worker, self, address)
        try:
            await stream.run()
        finally:
            if self.workers.get(address) is link:
                reason = stream.comm.closed_reason or "connection closed"
                self.nannies.worker_connection_lost(address, reason)

    def _remove_worker(
        self,
        address: str,
        reason: str,
        *,
        expected: bool,
        cause: str,
        exit_status: dict[str, Any] | None = None,
    ) -> None:
        """``cause``, the kind of loss: ``closed`` (the worker said goodbye), ``retired``,
        ``heartbeat-timeout``, ``connection-lost``, ``exited`` or ``killed`` (its nanny saw the
        process end); ``reason`` says it in words. ``exit_status``: ``exit-code`` and
        ``signal``, as the nanny saw them. The stimulus id names the cause too."""
        link = self.workers.pop(address, None)
        if link is None:
            return
        lost = self.state.lost_tasks(address)
        stimulus_id = _stimulus(f"{'worker-left' if expected else 'worker-lost'}-{cause}")
        self._apply(self.state.remove_worker(address, stimulus_id, expected=expected))
        log = logger.info if expected else logger.warning
        log(
            "Remove worker %s (name: %s): %s (%s); lost %d processing, %d computed, "
            "%d scattered tasks",
            address,
            link.name,
            cause,
            reason,
            *map(len, lost.values()),
        )
        self._log_own_event(
            ["all", address],
            {
                "action": "remove-worker",
                "worker": address,
                "name": link.name,
                "cause": cause,
                "reason": reason,
                "expected": expected,
                **lost,
                "lost-tasks": [key for keys in lost.values() for key in keys],
                "stimulus_id": stimulus_id,
                **(exit_status or {}),
            },
        )
        for extension in self.extensions.values():
            extension.remove_worker(address)
        for plugin_key, plugin in list(self.plugins.items()):
            self._run_hook(
                plugin_key,
                plugin.remove_worker,
                self,
                address,
                stimulus_id=stimulus_id,
                reason=reason,
            )
        if not link.stream.closed:
            link.stream.comm.abort(reason)

    async def _housekeeping(self) -> None:
        """Once a second: heartbeats out, remove workers silent past their TTL, report ledger
        overload. Workers and clients that stop hearing our heartbeats reconnect."""
        reported_drops = 0
        while self.status == "running":
            await asyncio.sleep(min(self.worker_ttl / 4, 1.0) if self.worker_ttl else 1.0)
            for stream in [
                *(link.stream for link in self.workers.values()),
                *self.clients.values(),
            ]:
                if not stream.closed:
                    stream.send({"op": "heartbeat"})
            if self.worker_ttl:
                now = time.monotonic()
                for address, link in list(self.workers.items()):
                    silent = now - link.last_seen
                    if silent > self.worker_ttl:
                        self._remove_worker(
                            address,
                            f"worker-ttl-timed-out: silent for {silent:.1f}s",
                            expected=False,
                            cause="heartbeat-timeout",
                        )
            dropped = self.record.dropped
            if dropped > reported_drops:
                self.log_event(
                    "ledger",
                    {
                        "action": "ledger-dropped",
                        "dropped": dropped - reported_drops,
                        "total": dropped,
                        "cause": self.record.ledger_write_error,
                    },
                )
                reported_drops = dropped
            self._report_plugin_errors()

    def _worker_handlers(self, address: str) -> dict[str, Callable[..., Any]]:
        state = self.state

        def task_finished(
            key: str,
            nbytes: int,
            type: str | None,
            stimulus_id: str,
            startstops: list[float] | None = None,
            data: bytes | None = None,
        ) -> None:
            if startstops:
                self.record.execution(
                    key, address, startstops[2], startstops[0], startstops[1], "memory"
                )
            self._apply(
                state.task_finished(
                    address,
                    key,
                    nbytes,
                    type,
                    stimulus_id,
                    _startstop(startstops),
                    data,
                    now=time.time(),
                )
            )

        def task_erred(
            key: str, error: dict[str, Any], stimulus_id: str, startstops: list[float] | None = None
        ) -> None:
            if startstops:
                self.record.execution(
                    key, address, startstops[2], startstops[0], startstops[1], "erred"
                )
            ts = state.tasks.get(key)
            attempts = ts.failed_attempts if ts is not None else 0
            self._apply(state.task_erred(address, key, error, stimulus_id, _startstop(startstops)))
            if ts is not None and ts.failed_attempts > attempts:
                # a traceback can be long: the event is shortened to fit, never refused
                record_failure(
                    self.record, self._log_own_event, ts, address, error, stimulus_id, startstops
                )

        def missing_data(key: str, errant_worker: str, stimulus_id: str) -> None:
            self._apply(state.missing_data(key, errant_worker, stimulus_id))

        def reschedule(key: str, stimulus_id: str) -> None:
            self._apply(state.reschedule(key, address, stimulus_id))

        def task_started(key: str) -> None:
            state.task_started(address, key)

        def long_running(key: str) -> None:
            self._apply(state.task_seceded(address, key, _stimulus("long-running")))

        def add_keys(keys: list[str], stimulus_id: str) -> None:
            self._apply(state.add_replicas(address, keys, stimulus_id))

        def release_worker_data(keys: list[str], stimulus_id: str) -> None:
            self._apply(state.remove_replicas(address, keys, stimulus_id))

        def log_events(events: list[Any]) -> None:
            for event in events:
                self._log_remote_event(event, address)

        def worker_records(transitions: Any, logs: list[list[Any]]) -> None:
            """A durable scheduler keeps its workers' history too, so it outlives them."""
            record = self.record
            if transitions:
                try:
                    record.worker_transitions(address, transitions)
                except ValueError as exc:
                    logger.warning("Dropping malformed transitions from %s: %s", address, exc)
            for timestamp, level, levelno, logger_name, message, key in logs:
                record.remote_log(
                    LogRecordEntry(timestamp, level, levelno, logger_name, message, address, key)
                )

        def worker_status(status: str, stimulus_id: str) -> None:
            if status not in ("running", "paused"):
                logger.warning("Ignoring worker status %r from %s", status, address)
                return
            logger.info("Worker %s is %s: %s", address, status, _STATUS_MEANS[status])
            self._apply(state.set_worker_status(address, status, stimulus_id))

        def steal_response(key: str, state: str | None, stimulus_id: str) -> None:
            self.extensions["stealing"].steal_response(  # type: ignore[attr-defined]
                address, key, state, stimulus_id
            )

        def heartbeat(metrics: Any = None) -> None:
            link = self.workers.get(address)
            if link is not None:
                link.last_seen = time.monotonic()
                if metrics is not None:
                    self.extensions["telemetry"].add_sample(address, link.name, metrics)

        def unregister(reason: str = "worker-close") -> None:
            # a retiring worker closes with the reason the scheduler gave it
            cause = RETIRED if reason == RETIRED else "closed"
            self._remove_worker(address, reason, expected=True, cause=cause)

        def touch(handler: Callable[..., None]) -> Callable[..., None]:
            def handle(**kwargs: Any) -> None:
                link = self.workers.get(address)
                if link is not None:
                    link.last_seen = time.monotonic()
                handler(**kwargs)

            return handle

        return {
            "task-finished": touch(task_finished),
            "task-erred": touch(task_erred),
            "missing-data": missing_data,
            "reschedule": reschedule,
            "task-started": task_started,
            "long-running": long_running,
            "add-keys": add_keys,
            "release-worker-data": release_worker_data,
            "log-events": log_events,
            "heartbeat": heartbeat,
            "worker-records": worker_records,
            "unregister": unregister,
            "worker-status": worker_status,
            "steal-response": steal_response,
        }

    async def _serve_client(self, comm: Comm, msg: dict[str, Any]) -> None:
        client = msg.get("client")
        if not isinstance(client, str) or not client:
            logger.warning("Refusing malformed client registration from %s", comm.peer_address)
            return
        previous = self.clients.get(client)
        if previous is not None:
            previous.comm.abort("client reconnected")
        pending_removal = self._client_removals.pop(client, None)
        if pending_removal is not None:
            pending_removal.cancel()
        stream = Stream(comm, self._client_handlers(client), f"stream from client {client}")
        self.clients[client] = stream
        self.state.add_client(client)
        await comm.send({"status": "OK", "id": self.id, "silence_timeout": self.worker_ttl})
        for topic in msg.get("topics") or []:
            self.subscriptions[topic].add(client)
        if previous is None:
            logger.info("Receive client connection: %s from %s", client, comm.peer_address)
            self.log_event(["all", client], {"action": "add-client", "client": client})
            for plugin_key, plugin in list(self.plugins.items()):
                self._run_hook(plugin_key, plugin.add_client, self, client)
        else:
            logger.info("Client %s reconnected from %s", client, comm.peer_address)
        try:
            await stream.run()
        finally:
            if self.clients.get(client) is stream:
                if client in self._clients_leaving or self.status != "running":
                    self._clients_leaving.discard(client)
                    self._remove_client(client, "client closed")
                else:
                    reason = stream.comm.closed_reason or "connection closed"
                    logger.info(
                        "Lost connection to client %s (%s); it has %.0fs to reconnect",
                        client,
                        reason,
                        self.client_grace,
                    )
                    self._client_removals[client] = self._spawn(
                        self._remove_client_later(client, stream, reason)
                    )

    async def _remove_client_later(self, client: str, stream: Stream, reason: str) -> None:
        """A client that dropped off keeps its futures for a grace period to reconnect."""
        await asyncio.sleep(self.client_grace)
        if self.clients.get(client) is stream:
            self._client_removals.pop(client, None)
            self._remove_client(client, f"{reason}; did not reconnect")

    def _remove_client(self, client: str, reason: str) -> None:
        del self.clients[client]
        for subscribers in self.subscriptions.values():
            subscribers.discard(client)
        self._apply(self.state.remove_client(client, _stimulus("client-releases")))
        logger.info("Remove client %s: %s", client, reason)
        self.log_event(["all", client], {"action": "remove-client", "client": client})
        for extension in self.extensions.values():
            extension.remove_client(client)
        for plugin_key, plugin in list(self.plugins.items()):
            self._run_hook(plugin_key, plugin.remove_client, self, client)

    def _client_handlers(self, client: str) -> dict[str, Callable[..., Any]]:
        state = self.state

        def update_graph(
            tasks: list[list[Any]],
            functions: dict[str, bytes],
            wanted: list[str],
            stimulus_id: str,
            fifo_timeout: float = DEFAULT_FIFO_TIMEOUT,
            calls: list[int] | None = None,
        ) -> None:
            specs = [TaskSpec(*task) for task in tasks]
            try:
                effects = state.update_graph(
                    client,
                    specs,
                    functions,
                    wanted,
                    stimulus_id,
                    now=time.monotonic(),
                    fifo_timeout=fifo_timeout,
                    calls=calls,
                )
            except ValueError as exc:
                logger.warning("Rejected graph from %s: %s", client, exc)
                self.clients[client].send(
                    {"op": "graph-rejected", "keys": wanted, "text": str(exc)}
                )
                return
            self._apply(effects)
            self.log_event(
                "scheduler",
                {
                    "action": "update-graph",
                    "client": client,
                    "n_tasks": len(specs),
                },
            )
            if self.plugins:
                keys = set(wanted)
                task_keys = [spec.key for spec in specs]
                for plugin_key, plugin in list(self.plugins.items()):
                    self._run_hook(
                        plugin_key,
                        plugin.update_graph,
                        self,
                        client=client,
                        keys=keys,
                        tasks=task_keys,
                        stimulus_id=stimulus_id,
                    )

        def releases(keys: list[str], stimulus_id: str | None = None) -> None:
            self._apply(
                state.client_releases_keys(
                    client, keys, stimulus_id or _stimulus("client-releases")
                )
            )

        def desires(keys: list[str]) -> None:
            self._apply(state.client_desires_keys(client, keys, _stimulus("client-desires")))

        def cancel(keys: list[str], stimulus_id: str | None = None, force: bool = False) -> None:
            stimulus_id = stimulus_id or _stimulus("client-cancels")
            self._apply(state.cancel(client, keys, stimulus_id, force=bool(force)))

        def log_event(topic: list[str], packed: bytes) -> None:
            self._log_remote_event([topic, packed], client)

        def fire_and_forget(keys: list[str]) -> None:
            self._apply(state.fire_and_forget(keys, _stimulus("fire-and-forget")))
            logger.info("Client %s fires and forgets %d keys", client, len(keys))
            self._log_own_event(
                "fire-and-forget", {"action": "fire-and-forget", "client": client, "keys": keys}
            )

        def retry(keys: list[str]) -> list[str]:
            effects, retried = state.retry(client, keys, _stimulus("client-retry"))
            self._apply(effects)
            logger.info("Client %s retries %d keys", client, len(retried))
            self._log_own_event(client, {"action": "retry", "count": len(retried), "keys": retried})
            return retried

        def subscribe(topic: str) -> None:
            self.subscriptions[topic].add(client)

        def unsubscribe(topic: str) -> None:
            self.subscriptions[topic].discard(client)

        async def update_data(
            who_has: dict[str, list[str]], nbytes: dict[str, int], types: dict[str, str]
        ) -> None:
            self._apply(state.update_data(client, who_has, nbytes, types, _stimulus("scatter")))

        return {
            "update-graph": update_graph,
            "client-releases-keys": releases,
            "client-desires-keys": desires,
            "cancel": cancel,
            "log-event": log_event,
            "fire-and-forget": fire_and_forget,
            "retry": retry,
            "task-spec": lambda key: state.task_spec(key),
            "subscribe-topic": subscribe,
            "unsubscribe-topic": unsubscribe,
            "heartbeat": lambda: None,
            "preload-modules": self._preload_modules,
            "close-client": lambda: self._clients_leaving.add(client),
            "update-data": update_data,
            "who-has": lambda keys=None: state.who_has(
                keys if keys is not None else [k for k, ts in state.tasks.items() if ts.who_has]
            ),
            "story": self._story,
            "transitions": self._transitions,
            "scheduler-info": self.identity,
            "run-on-scheduler": self._run_on_scheduler,
            "broadcast": self._broadcast,
            "register-scheduler-plugin": self._register_scheduler_plugin,
            "unregister-scheduler-plugin": self._unregister_scheduler_plugin,
            "register-worker-plugin": self._register_worker_plugin,
            "unregister-worker-plugin": self._unregister_worker_plugin,
            "get-scheduler-logs": lambda n=None: self.record.logs(n),
            "get-worker-logs": self._get_worker_logs,
            "log-entries": self._log_entries,
            "executions": lambda since=None: self.record.executions(since),
            "executions-recorded": lambda: self.record.executions_recorded,
            "failures": lambda keys: self.record.failures(keys),
            **{op: partial(handler, client) for op, handler in self._extension_handlers.items()},
        }

    def add_extension(self, name: str, extension: SchedulerExtension) -> None:
        """Serve more client requests, and hear when clients and workers leave (see
        ``storied.scheduler.extensions``). Clients connecting from now on can make them."""
        handlers = extension.client_handlers()
        clashes = sorted(set(handlers) & set(self._client_handlers("")))
        if clashes:
            raise ValueError(f"extension {name!r} would replace the requests {clashes}")
        self.extensions[name] = extension
        self._extension_handlers.update(handlers)

    def _preload_modules(self, modules: list[str]) -> None:
        """Pass a client's "these packages are needed soon" on to every worker (each decides
        what it imports: ``storied.worker.preload``)."""
        msg = {"op": "preload-modules", "modules": modules}
        for link in self.workers.values():
            link.stream.send(msg)

    # ------------------------------------------------------------------ effects

    def _apply(self, effects: Effects) -> None:
        for address, msgs in effects.workers.items():
            link = self.workers.get(address)
            if link is not None:
                link.stream.extend(msgs)
        for client, msgs in effects.clients.items():
            stream = self.clients.get(client)
            if stream is not None:
                stream.extend(msgs)
        for topic, msg in effects.events:
            self.log_event(topic, msg)

    def _plugin_transition(
        self, key: str, start: str, finish: str, stimulus_id: str, info: dict[str, Any]
    ) -> None:
        for plugin_key, plugin in self.plugins.items():
            self._run_hook(
                plugin_key, plugin.transition, key, start, finish, stimulus_id=stimulus_id, **info
            )

    def _set_plugin(self, name: str, plugin: SchedulerPlugin | None) -> SchedulerPlugin | None:
        """Add (or with None, remove) a plugin; the state machine calls out only if any exist."""
        previous = self.plugins.pop(name, None)
        if plugin is not None:
            self.plugins[name] = plugin
        self.state.on_transition = self._plugin_transition if self.plugins else None
        return previous

    def _run_hook(self, name: str, hook: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call a plugin hook now; an async one finishes in a task of the scheduler's."""
        awaitable = call_plugin_hook(self.plugin_errors, name, hook, *args, **kwargs)
        if awaitable is not None:
            self._spawn(finish_plugin_hook(self.plugin_errors, name, hook, awaitable))

    # ------------------------------------------------------------------ the record

    def _call_on_loop(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` on the scheduler's loop thread (the state is owned by that thread)."""
        return call_on_loop(self.loop, func, *args, **kwargs)

    def story(
        self, *keys_or_stimulus_ids: str
    ) -> list[tuple[str, str, str, dict[str, str], float]]:
        """Every transition of these keys (or caused by these stimuli), oldest first.

        Safe from any thread: the record reads its memory on the loop, and the ledger (if any)
        on the calling thread.
        """
        return self.record.story(*keys_or_stimulus_ids)

    def transitions(self, **filters: Any) -> list[Any]:
        """Rich transition records: see ``Record.transitions`` for the filters.

        ``keys`` is one key or a list of them.
        """
        if isinstance(filters.get("keys"), str):
            filters["keys"] = [filters["keys"]]
        return self.record.transitions(**filters)

    async def _off_loop(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A record query for a client: with a ledger, it flushes and reads the disk, so it
        runs in a thread and the loop goes on meanwhile (the record takes what is in memory
        on the loop)."""
        if self.record.durable:
            return await asyncio.to_thread(read, *args, **kwargs)
        return read(*args, **kwargs)

    async def _story(self, keys: list[str]) -> list[list[Any]]:
        return [list(t) for t in await self._off_loop(self.story, *keys)]

    async def _transitions(self, **filters: Any) -> list[dict[str, Any]]:
        return [r.as_dict() for r in await self._off_loop(self.transitions, **filters)]

    def log_event(self, topic: str | list[str], msg: Any) -> None:
        """Log a structured event to the ledger under ``topic`` (a str or a list of them)."""
        topics, packed = pack_event(topic, msg)
        self._call_on_loop(self._log_event, topics, packed, unpack_msg(packed), "scheduler")

    def _log_own_event(self, topic: str | list[str], msg: dict[str, Any]) -> None:
        """An event about the cluster whose lists (keys, a traceback) may grow without bound:
        shortened to fit ``events.max-event-size`` rather than refused."""
        limit = configured_max_event_size()
        if len(pack_msg(msg)) > limit:
            logger.warning(
                "Event %s too large to keep whole; its largest fields are cut", msg.get("action")
            )
            msg = fit_event(msg, limit)
        self.log_event(topic, msg)

    def get_events(self, topic: str | None = None) -> Any:
        return self.record.events(topic)

    def _log_remote_event(self, event: Any, source: str) -> None:
        """``[topic, packed msg]`` from a worker or a client, checked and packed by its caller;
        unpacking it once here keeps a malformed one out of the ledger, and only that one."""
        try:
            if not (isinstance(event, list) and len(event) == 2):
                raise TypeError(f"an event is [topic, packed msg], not {event!r:.100}")
            topic, packed = event
            topics = check_topics(topic)
            if not isinstance(packed, bytes):
                raise TypeError(f"event message must arrive packed, not {type(packed).__name__}")
            check_event_size(packed, configured_max_event_size())
            msg = unpack_msg(packed)
        except (TypeError, ValueError) as exc:
            logger.warning(
                "Dropped malformed event from %s: %s: %s", source, type(exc).__name__, exc
            )
            return
        self._log_event(topics, packed, msg, source)

    def _log_event(self, topics: list[str], packed: bytes, msg: Any, source: str) -> None:
        """``msg`` is ``packed`` unpacked, for subscribers and plugins."""
        timestamp = self.record.packed_event(topics, packed, source)
        for topic in topics:
            subscribers = self.subscriptions.get(topic)
            if subscribers:
                event = {"op": "event", "topic": topic, "event": [timestamp, msg]}
                for client in subscribers:
                    stream = self.clients.get(client)
                    if stream is not None:
                        stream.send(event)
            for plugin_key, plugin in self.plugins.items():
                self._run_hook(plugin_key, plugin.log_event, topic, msg)

    async def _cluster_story(
        self, keys: list[str], on_error: str = "raise", run: int | str = "current"
    ) -> list[dict[str, Any]]:
        """``run``: "current", "all" (every run on the ledger file) or a run id."""
        if self.record.durable:
            # workers ship their transitions here (the story survives workers that died); ask
            # the live ones to ship what they have not yet, so the story is complete
            await self._ask_workers(list(self.workers.values()), "ship-records")
            return await self._off_loop(self.record.explained_story, *keys, run=run)
        entries = self.record.explained_story(*keys, where="scheduler", run=run)
        links = list(self.workers.values())
        replies = await self._ask_workers(links, "story", keys=keys)
        for link, reply in zip(links, replies, strict=True):
            if isinstance(reply, BaseException):
                if on_error == "raise" and not isinstance(reply, CommClosedError):
                    raise RuntimeError(
                        f"could not get the story from worker {link.address}: {reply!r}"
                    ) from reply
                logger.info("Could not get the story from %s: %s", link.address, reply)
                continue
            entries.extend(reply)
        entries.sort(key=lambda entry: entry["timestamp"])
        return entries

    async def _get_worker_logs(
        self, n: int | None = None, workers: list[str] | None = None
    ) -> dict[str, Any]:
        return await self._broadcast_request("get-logs", workers, n=n)

    async def _log_entries(
        self, n: int | None = None, keys: list[str] | None = None
    ) -> list[list[Any]]:
        """Structured log records of the scheduler and every worker, oldest first; with
        ``keys``, only what those tasks logged and printed (``worker.capture-task-logs``)."""
        own = [] if keys is not None else self.record.log_handler().entries()[-(n or 0) :]
        entries = [e.as_list() for e in own]
        replies = await self._broadcast_request("log-entries", None, n=n, keys=keys)
        for worker_entries in replies.values():
            entries.extend(worker_entries)
        entries.sort(key=lambda entry: entry[0])
        return entries

    async def _ask_workers(self, links: list[_WorkerLink], method: str, **kwargs: Any) -> list[Any]:
        """Ask every worker at once; each one's reply, or the exception in its place (a
        ``TimeoutError`` if it did not answer within ``worker_reply_timeout``: a frozen worker
        must not hold up the answer until its ttl runs out)."""
        return await asyncio.gather(
            *(
                asyncio.wait_for(link.stream.request(method, **kwargs), self.worker_reply_timeout)
                for link in links
            ),
            return_exceptions=True,
        )

    async def _broadcast_request(
        self, method: str, workers: list[str] | None, **kwargs: Any
    ) -> dict[str, Any]:
        targets = [self.workers[w] for w in (workers or list(self.workers)) if w in self.workers]
        replies = await self._ask_workers(targets, method, **kwargs)
        results: dict[str, Any] = {}
        for link, reply in zip(targets, replies, strict=True):
            if isinstance(reply, CommClosedError | TimeoutError):
                logger.info("No %s from %s: %r", method, link.address, reply)
                continue
            if isinstance(reply, BaseException):
                raise reply
            results[link.address] = reply
        return results

    # ------------------------------------------------------------------ remote calls

    def identity(self) -> dict[str, Any]:
        nthreads = {ws.address: ws.nthreads for ws in self.state.workers.values()}
        return {
            "type": "Scheduler",
            "id": self.id,
            "address": self.address,
            "workers": {
                address: {
                    "name": link.name,
                    "nthreads": nthreads.get(address, 0),
                    "pid": link.pid,
                    "nanny": link.nanny,
                    "nanny_pid": self.nannies.pid(link.nanny),
                    "memory_limit": link.memory_limit,
                    "metrics": self.extensions["telemetry"].newest(address),
                    **(
                        self.state.workers[address].identity()
                        if address in self.state.workers
                        else {}
                    ),
                }
                for address, link in self.workers.items()
            },
            "tasks": len(self.state.tasks),
            "clients": len(self.clients),
            "dashboard": self.dashboard.link if self.dashboard is not None else None,
        }

    async def _run_on_scheduler(self, function: bytes, args: bytes) -> bytes:
        func = pickle_loads(function)
        positional, keywords = pickle_loads(args)
        params = _parameters(func)
        if "dask_scheduler" in params:
            keywords["dask_scheduler"] = self
        elif "scheduler" in params and "scheduler" not in keywords:
            keywords["scheduler"] = self
        result = func(*positional, **keywords)
        if inspect.isawaitable(result):
            result = await result
        return pickle_dumps(result)

    async def _broadcast(
        self, function: bytes, args: bytes, workers: list[str] | None = None
    ) -> dict[str, bytes]:
        return await self._broadcast_request("run", workers, function=function, args=args)

    async def _register_scheduler_plugin(
        self, plugin: bytes, name: str | None, idempotent: bool
    ) -> str:
        instance: SchedulerPlugin = pickle_loads(plugin)
        name = plugin_name(instance, name)
        if name in self.plugins:
            if idempotent:
                return name
            await self._unregister_scheduler_plugin(name)
        try:
            await run_setup_hook(instance.start, self)
        except Exception:
            logger.exception("Scheduler plugin %r not registered: its start() failed", name)
            raise
        self._set_plugin(name, instance)
        logger.info("Registered scheduler plugin %r", name)
        return name

    async def _unregister_scheduler_plugin(self, name: str) -> None:
        plugin = self._set_plugin(name, None)
        if plugin is None:
            raise ValueError(f"no scheduler plugin named {name!r} is registered")
        await run_plugin_hook(self.plugin_errors, name, plugin.close)

    async def _register_worker_plugin(self, plugin: bytes, name: str, idempotent: bool) -> str:
        if name in self.worker_plugins and idempotent:
            return name
        self.worker_plugins[name] = plugin
        try:
            await self._broadcast_request("add-plugin", None, plugin=plugin, name=name)
        except Exception as error:
            # all or nothing: workers whose setup worked drop it again, later ones never get it
            self.worker_plugins.pop(name, None)
            await self._broadcast_request("remove-plugin", None, name=name)
            logger.error("Worker plugin %r not registered: its setup() failed: %r", name, error)
            raise
        logger.info("Registered worker plugin %r", name)
        return name

    async def _unregister_worker_plugin(self, name: str) -> None:
        if self.worker_plugins.pop(name, None) is None:
            raise ValueError(f"no worker plugin named {name!r} is registered")
        await self._broadcast_request("remove-plugin", None, name=name)

    def _report_plugin_errors(self) -> None:
        """Plugin hook failures since the last report, as ``plugin-errors`` events."""
        for message in self.plugin_errors.summary():
            self._log_own_event(PLUGIN_ERRORS_TOPIC, message)

    def add_plugin(self, plugin: SchedulerPlugin, name: str | None = None) -> None:
        """Register a plugin from code running in the scheduler's process."""
        name = plugin_name(plugin, name)
        self._set_plugin(name, plugin)
        if self.loop is not None:
            self._call_on_loop(self._run_hook, name, plugin.start, self)


def _saturation(value: float | str) -> float:
    """``scheduler.worker-saturation`` as a number: above 0, or ``inf`` (no queuing)."""
    try:
        saturation = float(value)
    except (TypeError, ValueError):
        saturation = math.nan
    if isinstance(value, bool) or not saturation > 0:
        raise ValueError(
            f"worker-saturation must be a number above 0 or 'inf', not {value!r} "
            "(e.g. 1.1: send each worker 1.1 tasks per thread, queue the rest)"
        )
    return saturation


def _startstop(startstops: list[Any] | None) -> tuple[float, float] | None:
    return (startstops[0], startstops[1]) if startstops else None


def _parameters(func: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()
