"""The HTML pages: one shell each, filled in by ``static/dashboard.js`` from ``/api/v1``."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from storied.dashboard.api import CATALOG

STATIC = Path(__file__).with_name("static")

#: page name -> (title, the markup the script fills in)
PAGES: dict[str, tuple[str, str]] = {
    "status": (
        "Status",
        """
<section><h2>Workers</h2><table id="workers" class="grid"></table></section>
<section><h2>Progress by task prefix</h2><div id="progress"></div></section>
<section><h2>Task stream</h2><div id="task-stream" class="chart"></div></section>
""",
    ),
    "tasks": (
        "Tasks",
        """
<form id="tasks-form" class="search">
  <input name="prefix" placeholder="task prefix (e.g. inc)" size="24">
  <input name="state" placeholder="state (e.g. erred)" size="16">
  <button type="submit">Filter</button>
</form>
<p class="hint" id="tasks-total"></p>
<table id="tasks" class="grid"></table>
<div id="tasks-pager" class="pager"></div>
""",
    ),
    "story": (
        "Story",
        """
<form id="story-form" class="search">
  <input id="story-query" name="q" placeholder="key, key prefix or stimulus id" size="60">
  <button type="submit">Search</button>
</form>
<div id="story-summary"></div>
<div id="story-related" class="related"></div>
<div id="failures"></div>
<div id="story-lanes" class="chart"></div>
<table id="story" class="grid"></table>
<div id="story-pager" class="pager"></div>
""",
    ),
    "events": (
        "Events",
        """
<div class="split">
  <section><h2>Topics</h2><table id="topics" class="grid"></table></section>
  <section><h2 id="events-title">Events</h2>
    <form id="events-form" class="search">{window}
      <button type="submit">Filter</button>
    </form>
    <p class="hint" id="events-hint"></p>
    <table id="events" class="grid"></table>
    <div class="pager"><button type="button" id="events-older">older ▶</button></div></section>
</div>
""",
    ),
    "logs": (
        "Logs",
        """
<form id="logs-form" class="search">
  <label>Level <select id="logs-level" name="level">
    <option>DEBUG</option><option selected>INFO</option><option>WARNING</option>
    <option>ERROR</option><option>CRITICAL</option></select></label>
  <label>Logger <select id="logs-logger" name="logger"><option value="">(all)</option></select>
  </label>{window}
  <button type="submit">Filter</button>
</form>
<p class="hint" id="logs-hint"></p>
<table id="logs" class="grid"></table>
<div id="logs-pager" class="pager"></div>
""",
    ),
    "runs": ("Runs", """<table id="runs" class="grid"></table>"""),
}

#: The from / to inputs of a time window (events and logs): what the API's since / until take.
_WINDOW = """
  <label>From <input name="since" placeholder="UTC, e.g. 2026-12-01 18:30" size="24">
  </label>
  <label>to <input name="until" placeholder="empty: up to now" size="24"></label>"""

_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>storied: {title}</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body data-page="{page}" data-live="{live}">
<header><span class="brand">storied</span>
<nav>{nav}</nav><span id="run-label" class="run"></span></header>
<main><h1>{title}</h1>{body}</main>
<script src="/static/charts.js"></script>
<script src="/static/dashboard.js"></script>
</body></html>
"""


def render(page: str, live: bool) -> str:
    title, markup = PAGES[page]
    body = markup.replace("{window}", _WINDOW)
    links = " ".join(
        f'<a href="/{name}" data-page-link="{name}"'
        f"{' class=current' if name == page else ''}>{html.escape(PAGES[name][0])}</a>"
        for name in PAGES
    )
    return _SHELL.format(
        title=html.escape(title), page=page, live=str(live).lower(), nav=links, body=body
    )


def _page(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=render(name, request.app[CATALOG].live), content_type="text/html")

    return handler


async def index(request: web.Request) -> web.Response:
    """Live: the status page; offline: the runs on file."""
    raise web.HTTPFound("/status" if request.app[CATALOG].live else "/runs")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        *(web.get(f"/{name}", _page(name)) for name in PAGES),
        web.static("/static", STATIC),
    ]
