"""What the nanny tests share: asking the scheduler about workers, and whether a pid lives."""

from __future__ import annotations

from typing import Any

import psutil

from storied import Client


def workers_by_name(client: Client) -> dict[str, dict[str, Any]]:
    """``scheduler_info()`` per worker, by name, each with its ``address`` too."""
    return {w["name"]: w for w in client.scheduler_info()["workers"].values()}


def events(client: Client, topic: str, action: str) -> list[dict[str, Any]]:
    return [msg for _, msg in client.get_events(topic) if msg.get("action") == action]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
