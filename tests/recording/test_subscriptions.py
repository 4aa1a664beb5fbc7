"""Subscribing to topics over a real cluster (issue 3, point 3): plain and coroutine handlers,
handlers that raise, delivery exactly once per subscribed client, unsubscribing."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from engine.helpers import poll

from storied import Client

from .helpers import log_from_task, unique


class Inbox:
    """A handler that keeps what it is given; ``wait_for`` blocks until a message arrives."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Any]] = []
        self._arrived = threading.Condition()

    def __call__(self, event: tuple[float, Any]) -> None:
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()

    @property
    def messages(self) -> list[Any]:
        return [msg for _, msg in self.events]

    def wait_for(self, msg: Any, timeout: float = 10.0) -> None:
        with self._arrived:
            assert self._arrived.wait_for(lambda: msg in self.messages, timeout), (
                f"{msg!r} never arrived; got {self.messages}"
            )


def test_a_plain_handler_gets_each_event_as_timestamp_and_msg(client):
    topic = unique("plain")
    inbox = Inbox()
    client.subscribe_topic(topic, inbox)
    client.log_event(topic, {"from": "client"})
    address = client.submit(log_from_task, topic, {"from": "task"}, pure=False).result(10)
    client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.log_event(topic, "scheduler"))
    inbox.wait_for("scheduler")
    try:
        assert inbox.events == list(client.get_events(topic))
        assert inbox.messages == [{"from": "client"}, {"from": "task"}, "scheduler"]
        assert all(type(event) is tuple for event in inbox.events)
        assert client.get_events(topic, detail=True)[1]["source"] == address
    finally:
        client.unsubscribe_topic(topic)


def test_a_coroutine_handler_is_awaited_by_a_sync_client(client):
    topic = unique("coroutine")
    inbox = Inbox()

    async def handler(event: tuple[float, Any]) -> None:
        await asyncio.sleep(0)
        inbox(event)

    client.subscribe_topic(topic, handler)
    client.log_event(topic, "one")
    client.log_event(topic, "two")
    inbox.wait_for("two")
    client.unsubscribe_topic(topic)
    assert inbox.messages == ["one", "two"]


def test_handlers_of_an_asynchronous_client(cluster):
    async def main() -> tuple[list[Any], list[Any]]:
        topic = unique("async")
        plain: list[Any] = []
        awaited: list[Any] = []
        both_arrived = asyncio.Event()

        def on_plain(event: tuple[float, Any]) -> None:
            plain.append(event[1])

        async def on_awaited(event: tuple[float, Any]) -> None:
            await asyncio.sleep(0)
            awaited.append(event[1])
            both_arrived.set()

        async with Client(cluster, asynchronous=True) as client:
            client.subscribe_topic(topic, on_plain)
            client.subscribe_topic(topic + "-awaited", on_awaited)
            await client.log_event([topic, topic + "-awaited"], {"n": 1})
            await asyncio.wait_for(both_arrived.wait(), 10)
            client.unsubscribe_topic(topic)
            client.unsubscribe_topic(topic + "-awaited")
        return plain, awaited

    plain, awaited = asyncio.run(asyncio.wait_for(main(), 30))
    assert plain == [{"n": 1}]
    assert awaited == [{"n": 1}]


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
def test_a_handler_that_raises_is_logged_and_stays_subscribed(client, caplog, kind):
    topic = unique("raises")
    inbox = Inbox()

    def plain(event: tuple[float, Any]) -> None:
        inbox(event)
        if event[1] == "bad":
            raise RuntimeError("handler broke")

    async def coroutine(event: tuple[float, Any]) -> None:
        plain(event)

    client.subscribe_topic(topic, plain if kind == "plain" else coroutine)
    with caplog.at_level(logging.ERROR, logger="storied.client"):
        client.log_event(topic, "bad")
        client.log_event(topic, "good")
        inbox.wait_for("good")
        failures = poll(
            lambda: [r for r in caplog.records if "handler broke" in (r.exc_text or "")],
            what="the failure logged",
        )
    client.unsubscribe_topic(topic)
    assert inbox.messages == ["bad", "good"]
    [failure] = failures
    assert failure.name == "storied.client"
    assert topic in failure.getMessage()


def test_two_clients_each_get_every_event_exactly_once(cluster, client):
    topic, done = unique("shared"), unique("done")
    inboxes = [Inbox(), Inbox()]
    with Client(cluster) as first, Client(cluster) as second:
        for subscriber, inbox in zip((first, second), inboxes, strict=True):
            subscriber.subscribe_topic(topic, inbox)
            subscriber.subscribe_topic(done, inbox)
            poll(lambda s=subscriber: s.id in cluster.scheduler.subscriptions[done])
        client.gather(client.map(log_from_task, [topic] * 30, range(30)))
        for i in range(30, 40):
            client.log_event(topic, i)
        # events reach a client in the order the scheduler logged them, so once "end" has
        # arrived everything logged before it has too
        poll(lambda: len(client.get_events(topic)) == 40, what="all 40 events logged")
        client.log_event(done, "end")
        for inbox in inboxes:
            inbox.wait_for("end")
    for inbox in inboxes:
        assert sorted(inbox.messages[:-1]) == list(range(40))
        assert inbox.messages[-1] == "end"


def test_unsubscribing_stops_delivery(cluster, client):
    topic, barrier = unique("stopped"), unique("barrier")
    inbox = Inbox()
    client.subscribe_topic(topic, inbox)
    client.log_event(topic, "before")
    inbox.wait_for("before")

    client.unsubscribe_topic(topic)
    client.log_event(topic, "after")
    client.subscribe_topic(barrier, inbox)
    client.log_event(barrier, "barrier")  # sent after "after", so arrives after it would have
    inbox.wait_for("barrier")
    client.unsubscribe_topic(barrier)
    assert inbox.messages == ["before", "barrier"]
    assert client.id not in cluster.scheduler.subscriptions.get(topic, set())
    assert [msg for _, msg in client.get_events(topic)] == ["before", "after"]


def test_unsubscribing_from_a_topic_not_subscribed_to_is_an_error(client):
    with pytest.raises(ValueError, match="not subscribed"):
        client.unsubscribe_topic(unique("never-subscribed"))


def test_subscribing_takes_a_str_topic_and_a_callable(client):
    with pytest.raises(TypeError, match="topic"):
        client.subscribe_topic(["a", "list"], print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        client.subscribe_topic(unique("topic"), "print")  # type: ignore[arg-type]
