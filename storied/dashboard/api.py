"""``/api/v1``: the versioned JSON API every page reads (documented in docs/dashboard.md)."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web

from storied.dashboard import views
from storied.dashboard.history import Catalog, LogFilter, RunHistory
from storied.loglevels import BadLevel, parse_level
from storied.record.window import BadTime, parse_window, within

API_PREFIX = "/api/v1"
#: How often the events tail looks for new events.
TAIL_INTERVAL = 0.5
#: How often the status push looks whether anything changed (it sends only then).
STATUS_INTERVAL = 2.0
#: How often the tasks push looks whether the run's tasks changed (it sends only then).
TASKS_INTERVAL = 1.0
#: The tasks push waits at least this many times as long as counting the task table took.
RECOUNT_SPACING = 20
#: How long a push stays silent at most: then it writes a comment, which fails (ending the
#: push) once the browser has gone, so a tail of a quiet run does not outlive its page.
KEEPALIVE = 10.0
#: The most rows one page of any list may ask for.
MAX_PAGE = 10_000
CATALOG: web.AppKey[Catalog] = web.AppKey("catalog", Catalog)
#: The open events tails: they run until the browser leaves, so the server ends them on close.
TAILS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("tails", set)

_dumps = partial(json.dumps, default=repr)


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=_dumps)


def bad_parameter(parameter: str, error: str, accepted: str) -> web.HTTPBadRequest:
    """A 400 whose JSON body says which parameter is wrong, why, and what it accepts."""
    body = {"error": error, "parameter": parameter, "accepted": accepted}
    return web.HTTPBadRequest(text=_dumps(body), content_type="application/json")


def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
    """A query parameter that must be an int; a clear 400 otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_parameter(name, f"{name} must be an integer, not {raw!r}", "an integer") from None


def _page_params(request: web.Request, default_limit: int) -> tuple[int, int]:
    """``offset`` and ``limit`` of a page: 0 <= offset, 1 <= limit <= MAX_PAGE."""
    offset = _int_param(request, "offset", 0) or 0
    limit = _int_param(request, "limit", default_limit) or 0
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise bad_parameter(
            "offset" if offset < 0 else "limit",
            f"a page needs offset >= 0 and 1 <= limit <= {MAX_PAGE}, "
            f"not offset={offset}, limit={limit}",
            f"offset: an integer >= 0; limit: an integer from 1 to {MAX_PAGE}",
        )
    return offset, limit


def _level_param(request: web.Request) -> int:
    raw = request.query.get("level", "")
    try:
        return parse_level(raw) if raw else 0
    except BadLevel as error:
        raise bad_parameter("level", str(error), error.accepted) from None


def _window_params(request: web.Request) -> tuple[float | None, float | None]:
    """``since`` and ``until``: epoch seconds or ISO 8601 (UTC unless it says otherwise, as
    the pages show times), ``until`` not before ``since``; a clear 400 otherwise."""
    try:
        return parse_window(request.query.get("since"), request.query.get("until"), datetime.UTC)
    except BadTime as error:
        raise bad_parameter(error.parameter, str(error), error.accepted) from None


async def run_of(request: web.Request) -> RunHistory:
    """The run named by ``?run=`` (the newest without it); 404 when there is none such."""
    try:
        return await request.app[CATALOG].run(request.query.get("run"))
    except KeyError as exc:
        body = {"error": exc.args[0], "parameter": "run", "accepted": "a run id of /api/v1/runs"}
        raise web.HTTPNotFound(text=_dumps(body), content_type="application/json") from None


async def runs(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    summaries = [await views.run_summary(run) for run in await catalog.runs()]
    return _json({"live": catalog.live, "runs": summaries})


def _view(
    compute: Callable[[RunHistory, web.Request], Awaitable[Any]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return _json(await compute(await run_of(request), request))

    return handler


async def _workers(run: RunHistory, request: web.Request) -> Any:
    return await views.workers(run)


async def _progress(run: RunHistory, request: web.Request) -> Any:
    return await views.progress(run)


async def _task_stream(run: RunHistory, request: web.Request) -> Any:
    return await views.task_stream(run, _stream_limit(request))


def _stream_limit(request: web.Request) -> int:
    return _int_param(request, "limit", 2_000) or 0


async def _status(run: RunHistory, request: web.Request) -> Any:
    return await views.status(run, _stream_limit(request))


async def _tasks(run: RunHistory, request: web.Request) -> Any:
    offset, limit = _page_params(request, 100)
    table = await run.tasks()
    return await asyncio.to_thread(
        table.page,
        offset,
        limit,
        prefix=request.query.get("prefix") or None,
        state=request.query.get("state") or None,
    )


async def _story(run: RunHistory, request: web.Request) -> Any:
    offset, limit = _page_params(request, 1_000)
    return await views.story(run, request.query.get("q", ""), offset, limit)


async def _topics(run: RunHistory, request: web.Request) -> Any:
    return await run.event_counts()


async def _events(run: RunHistory, request: web.Request) -> Any:
    topic = request.query.get("topic") or None
    _, limit = _page_params(request, 200)
    before = _int_param(request, "before", None)
    since, until = _window_params(request)
    found = await run.events(topic, limit=limit, before_seq=before, since=since, until=until)
    return [record._asdict() for record in reversed(found)]


async def _loggers(run: RunHistory, request: web.Request) -> Any:
    return await run.loggers()


async def _logs(run: RunHistory, request: web.Request) -> Any:
    offset, limit = _page_params(request, 500)
    since, until = _window_params(request)
    wanted = LogFilter(_level_param(request), request.query.get("logger") or None, since, until)
    found = await run.logs(wanted, limit, offset)
    return [entry.as_dict() for entry in reversed(found)]


async def _push(
    request: web.Request,
    messages: Callable[[], Awaitable[list[str]]],
    interval: float | Callable[[], float],
) -> web.StreamResponse:
    """Server-sent events: what ``messages()`` returns, asked every ``interval`` seconds (or
    ``interval()``: a spacing that changes), until the browser goes away or the server closes
    (which ends the pushes it counts in TAILS)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    request.app[TAILS].add(task)
    quiet_since = asyncio.get_running_loop().time()
    try:
        while True:
            sent = await messages()
            now = asyncio.get_running_loop().time()
            if not sent and now - quiet_since >= KEEPALIVE:
                sent = [":\n\n"]  # a comment: a browser that went away is noticed
            for message in sent:
                await response.write(message.encode())
            if sent:
                quiet_since = now
            await asyncio.sleep(interval() if callable(interval) else interval)
    except ConnectionResetError:  # the browser went away
        return response
    finally:
        request.app[TAILS].discard(task)


async def _push_on_change(
    request: web.Request,
    event: str,
    version: Callable[[], Any],
    answer: Callable[[], Awaitable[Any]],
    interval: float | Callable[[], float],
) -> web.StreamResponse:
    """``event`` with ``answer()`` now, then again each time ``version()`` has changed, looked
    at every ``interval`` seconds (as ``_push`` takes it)."""
    sent = None

    async def changed() -> list[str]:
        nonlocal sent
        now = version()
        if now == sent:
            return []
        sent = now
        return [f"event: {event}\ndata: {_dumps(await answer())}\n\n"]

    return await _push(request, changed, interval)


async def status_stream(request: web.Request) -> web.StreamResponse:
    """The status page's whole answer (``/status``'s JSON) now, then again each time the run
    has changed."""
    limit = _stream_limit(request)
    run = await run_of(request)
    return await _push_on_change(
        request, "status", run.version, partial(views.status, run, limit), STATUS_INTERVAL
    )


async def tasks_stream(request: web.Request) -> web.StreamResponse:
    """``/tasks``'s answer for the same page and filters now, then again each time the run's
    tasks have changed: looked at every ``TASKS_INTERVAL`` seconds, or ``RECOUNT_SPACING``
    times as long as the newest count of the task table took if that is longer, so counting
    takes a bounded share of the scheduler's process however large the run (the table is
    counted once per change for every open page)."""
    run = await run_of(request)
    _page_params(request, 100)  # a bad page is a 400 before the stream starts

    def spacing() -> float:
        return max(TASKS_INTERVAL, RECOUNT_SPACING * run.count_seconds)

    return await _push_on_change(
        request, "tasks", run.tasks_version, partial(_tasks, run, request), spacing
    )


async def events_tail(request: web.Request) -> web.StreamResponse:
    """Each new event of ``?topic=`` (every topic without it) after ``?after=SEQ``, as it is
    recorded; with ``?since=``/``?until=``, those logged in that window only."""
    topic = request.query.get("topic") or None
    after = _int_param(request, "after", None)
    since, until = _window_params(request)
    run = await run_of(request)
    if after is None:
        newest = await run.events(topic, limit=1)
        after = newest[-1].seq if newest else 0

    async def new_events() -> list[str]:
        nonlocal after
        found = await run.events(topic, after_seq=after)
        if found:  # past every new one, in the window or not, so none is looked at twice
            after = found[-1].seq
        return [
            f"id: {rec.seq}\ndata: {_dumps(rec._asdict())}\n\n"
            for rec in found
            if within(rec.timestamp, since, until)
        ]

    return await _push(request, new_events, TAIL_INTERVAL)


async def logs_tail(request: web.Request) -> web.StreamResponse:
    """Each new log record of a live run that ``?level=``, ``?logger=``, ``?since=`` and
    ``?until=`` admit, as it reaches the scheduler (as ``/logs`` gives them)."""
    run = await run_of(request)
    since, until = _window_params(request)
    wanted = LogFilter(_level_param(request), request.query.get("logger") or None, since, until)
    feed = run.log_feed
    if feed is None:
        raise bad_parameter(
            "run",
            f"run {run.info['id']!r} is on file: its logs get no new records",
            "the live run (a live dashboard's only run)",
        )
    cursor = feed.cursor()

    async def new_records() -> list[str]:
        nonlocal cursor
        assert feed is not None
        found, cursor = await feed.new(cursor)
        return [f"data: {_dumps(entry.as_dict())}\n\n" for entry in found if wanted.admits(entry)]

    try:
        await feed.watch()
        return await _push(request, new_records, TAIL_INTERVAL)
    finally:
        await feed.unwatch()


def routes() -> list[web.RouteDef]:
    return [
        web.get(f"{API_PREFIX}/runs", runs),
        web.get(f"{API_PREFIX}/workers", _view(_workers)),
        web.get(f"{API_PREFIX}/progress", _view(_progress)),
        web.get(f"{API_PREFIX}/task-stream", _view(_task_stream)),
        web.get(f"{API_PREFIX}/status", _view(_status)),
        web.get(f"{API_PREFIX}/status/stream", status_stream),
        web.get(f"{API_PREFIX}/tasks", _view(_tasks)),
        web.get(f"{API_PREFIX}/tasks/stream", tasks_stream),
        web.get(f"{API_PREFIX}/story", _view(_story)),
        web.get(f"{API_PREFIX}/topics", _view(_topics)),
        web.get(f"{API_PREFIX}/events", _view(_events)),
        web.get(f"{API_PREFIX}/events/tail", events_tail),
        web.get(f"{API_PREFIX}/logs", _view(_logs)),
        web.get(f"{API_PREFIX}/logs/tail", logs_tail),
        web.get(f"{API_PREFIX}/loggers", _view(_loggers)),
    ]
