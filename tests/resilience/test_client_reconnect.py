"""A client whose connection breaks reconnects and keeps its futures and subscriptions."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from engine.helpers import poll

#: bigger than what rides along with task-finished, so gathering it asks the worker
LARGE = 64 * 1024


def wait_for_gate(gate: str) -> str:
    """Returns the gate file's text once the test has written it."""
    deadline = time.monotonic() + 30
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never opened")
        time.sleep(0.01)
    return Path(gate).read_text()


def large_result(n: int) -> bytes:
    return bytes([n]) * LARGE


def test_client_reconnects_and_keeps_futures_and_subscriptions(
    fragile_cluster, fragile_client, tmp_path
):
    cluster, client, scheduler = fragile_cluster, fragile_client, fragile_cluster.scheduler
    finished = client.submit(large_result, 7)
    assert finished.result(timeout=10) == bytes([7]) * LARGE
    gate = tmp_path / "gate"
    pending = client.submit(wait_for_gate, str(gate))
    topic = f"reconnect-{uuid.uuid4().hex}"
    received: list[dict] = []
    client.subscribe_topic(topic, lambda event: received.append(event[1]))
    client.log_event(topic, {"n": "before"})
    poll(lambda: received == [{"n": "before"}])

    before = scheduler.clients[client.id]
    cut_at = time.monotonic()
    cluster.loop.call_soon_threadsafe(before.comm.abort, "cut off by the test")
    poll(lambda: scheduler.clients.get(client.id, before) is not before, timeout=10)
    assert time.monotonic() - cut_at < scheduler.client_grace
    poll(lambda: client.status == "running")

    opening = tmp_path / "gate.tmp"
    opening.write_text("open")
    opening.rename(gate)  # at once: the task never sees the gate existing but still empty
    assert pending.result(timeout=10) == "open"
    assert client.gather(finished) == bytes([7]) * LARGE
    assert scheduler.story(finished.key)[-1][2] == "memory", "the scheduler kept it"

    client.log_event(topic, {"n": "after"})
    client.log_event(topic, {"n": "last"})
    poll(lambda: {"n": "last"} in received)
    assert received == [{"n": "before"}, {"n": "after"}, {"n": "last"}]

    events = [msg for _, msg in client.get_events(client.id)]
    assert [msg["action"] for msg in events] == ["add-client", "reconnect-client"], (
        "a reconnection is not a new client"
    )
    reconnected = events[1]
    assert reconnected["reason"] == "closed by peer"
    assert (reconnected["new-scheduler"], reconnected["cancelled"]) == (False, 0)
    assert reconnected["attempts"] >= 1 and reconnected["seconds"] < scheduler.client_grace
