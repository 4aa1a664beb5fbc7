"""A worker ships its transitions to a durable scheduler from its own log, in bulk."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from storied.record import Record
from storied.record.blocks import unpack_block
from storied.record.shipments import checked_shipment
from storied.worker.server import _ShippingRecorder


class Stream:
    """What the recorder needs of a BatchedSend: the flush hook, and a flush asked for."""

    def __init__(self) -> None:
        self.on_flush: Any = None
        self.flushes_asked = 0

    def flush_soon(self) -> None:
        self.flushes_asked += 1


def shipped_keys(stream: Stream, timeout: float = 5.0) -> list[str]:
    """The keys of the next shipment the stream's flushes carry (waiting until one is due)."""
    deadline = time.monotonic() + timeout
    while not (messages := stream.on_flush()):
        assert time.monotonic() < deadline, "nothing was shipped"
        time.sleep(0.01)
    [message] = messages
    return unpack_block(checked_shipment(message["transitions"]).block)[0]


def test_a_new_stream_ships_what_the_broken_one_left_unshipped():
    async def scenario() -> None:
        recorder = _ShippingRecorder(Record("tcp://w:1"))
        recorder.transition("before", "released", "waiting", {}, "s0")  # not durable yet
        first, second = Stream(), Stream()
        recorder.ship_with(first)
        recorder.transition("inc-1", "released", "waiting", {}, "s1")
        recorder.transition("inc-1", "waiting", "ready", {}, "s1")
        # the scheduler is lost before that stream flushed; the worker registers again
        recorder.ship_with(second)
        assert second.flushes_asked == 1  # what waits goes at once
        assert shipped_keys(second) == ["inc-1", "inc-1"]
        recorder.transition("inc-2", "released", "waiting", {}, "s2")
        assert shipped_keys(second) == ["inc-2"]  # once due, SHIP_INTERVAL later
        assert second.on_flush() == []
        recorder.ship_with(None)  # not durable: nothing is shipped or kept for it
        recorder.transition("inc-3", "released", "waiting", {}, "s3")
        third = Stream()
        recorder.ship_with(third)
        assert third.on_flush() == [] and third.flushes_asked == 0

    asyncio.run(scenario())
