"""Steal requests racing other stimuli, on the pure state machines joined by in-order queues.

A steal is a round trip: the scheduler asks the victim, the victim answers. Whatever happens
to the task meanwhile (released, placed again, given back by the victim itself), a task must
run at most once per assignment: every ``Execute`` the workers are told is counted.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from storied.scheduler.state import Effects, SchedulerState
from storied.scheduler.stealing import WorkStealing
from storied.worker.state import Execute, GatherDep, SendMessage, WorkerState
from tests.scheduler.test_state import CLIENT, spec, submit

W1, W2, W3 = "tcp://w1", "tcp://w2", "tcp://w3"


class Wire:
    """One scheduler state and its workers' states; messages wait in per-direction queues, in
    order as on a TCP stream, until a test delivers them."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.state = SchedulerState(recorder, allowed_failures=1)
        self.stealing = WorkStealing(self.state)
        self.workers: dict[str, WorkerState] = {}
        self.to_worker: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque
        )
        self.to_scheduler: dict[str, collections.deque[dict[str, Any]]] = collections.defaultdict(
            collections.deque
        )
        #: how many times each key was started, on any worker
        self.runs: collections.Counter[str] = collections.Counter()
        #: fetches asked for and not done yet: (fetching worker, what it asked)
        self.fetches: list[tuple[str, GatherDep]] = []
        self.events: list[dict[str, Any]] = []

    def add_worker(self, address: str) -> None:
        self.workers[address] = WorkerState(1, self.recorder)
        self.send(self.state.add_worker(address, address[-2:], 1, f"add-{address}"))

    def send(self, effects: Effects) -> None:
        self.events.extend(msg for _, msg in effects.events)
        for address, msgs in effects.workers.items():
            self.to_worker[address].extend(msgs)

    def to_worker_ops(self, address: str) -> list[tuple[str, str]]:
        return [(m["op"], m.get("key", "")) for m in self.to_worker[address]]

    def deliver_to_worker(self, address: str) -> None:
        """Every message waiting for ``address``, in order."""
        worker, queue = self.workers[address], self.to_worker[address]
        while queue:
            msg = queue.popleft()
            op, sid = msg["op"], msg.get("stimulus_id", "")
            if op == "compute-task":
                instructions = worker.compute_task(
                    msg["key"], msg["function_id"], msg["args"], msg["priority"],
                    msg.get("who_has", {}), sid, msg.get("wanted", False),
                )  # fmt: skip
            elif op == "free-keys":
                instructions = worker.free_keys(msg["keys"], sid)
            elif op == "steal-request":
                instructions = worker.steal_request(msg["key"], sid)
            else:
                raise AssertionError(f"unexpected message to a worker: {msg}")
            self.follow(address, instructions)

    def finish(self, address: str, key: str) -> None:
        """``address`` finished running ``key``."""
        self.follow(address, self.workers[address].execute_success(key, 8, "int", 0, 1, "done"))

    def follow(self, address: str, instructions: list[Any]) -> None:
        for instruction in instructions:
            if isinstance(instruction, Execute):
                self.runs[instruction.key] += 1
                self.to_scheduler[address].append({"op": "task-started", "key": instruction.key})
            elif isinstance(instruction, SendMessage):
                self.to_scheduler[address].append(instruction.msg)
            elif isinstance(instruction, GatherDep):
                self.fetches.append((address, instruction))

    def deliver_to_scheduler(self, address: str) -> None:
        state, queue = self.state, self.to_scheduler[address]
        while queue:
            msg = queue.popleft()
            op, key, sid = msg["op"], msg.get("key", ""), msg.get("stimulus_id", "")
            if op == "task-started":
                state.task_started(address, key)
            elif op == "task-finished":
                self.send(state.task_finished(address, key, msg["nbytes"], msg["type"], sid))
            elif op == "add-keys":
                self.send(state.add_replicas(address, msg["keys"], sid))
            elif op == "release-worker-data":
                self.send(state.remove_replicas(address, msg["keys"], sid))
            elif op == "missing-data":
                self.send(state.missing_data(key, msg["errant_worker"], sid))
            elif op == "reschedule":
                self.send(state.reschedule(key, address, sid))
            elif op == "steal-response":
                self.send(self.stealing.steal_response(address, key, msg["state"], sid))
            else:
                raise AssertionError(f"unexpected message to the scheduler: {msg}")

    def fetch(self) -> None:
        """Every fetch asked for succeeds."""
        fetches, self.fetches = self.fetches, []
        for address, gather in fetches:
            worker = self.workers[address]
            self.follow(address, worker.gather_success(gather.worker, gather.keys, "fetched"))

    def settle(self) -> None:
        """Deliver everything and run every task to its end."""
        while (
            any(self.to_worker.values())
            or any(self.to_scheduler.values())
            or self.fetches
            or any(worker.executing for worker in self.workers.values())
        ):
            for address in list(self.workers):
                self.deliver_to_worker(address)
                self.deliver_to_scheduler(address)
            self.fetch()
            for address, worker in self.workers.items():
                for ts in list(worker.executing):
                    self.finish(address, ts.key)
                self.deliver_to_scheduler(address)


@pytest.fixture
def wire(recorder) -> Wire:
    """w1 holds t-0 .. t-5 (t-0 runs); w2 joins idle; a steal of t-5 (and t-4) is asked."""
    wire = Wire(recorder)
    wire.add_worker(W1)
    wire.send(submit(wire.state, *(spec(f"t-{i}") for i in range(6))))
    wire.deliver_to_worker(W1)
    wire.deliver_to_scheduler(W1)
    assert wire.runs == {"t-0": 1}
    wire.add_worker(W2)
    wire.send(wire.stealing.balance())
    assert ("steal-request", "t-5") in wire.to_worker_ops(W1)
    return wire


def test_the_plain_steal_runs_each_task_once(wire):
    wire.settle()
    assert wire.runs == {f"t-{i}": 1 for i in range(6)}
    assert wire.state.tasks["t-5"].who_has == {W2}


def test_released_and_placed_on_the_victim_again_before_the_answer(wire):
    """The client lets t-5 go and asks for it again, on w1 (``workers=["w1"]``). The victim's
    answer ("given back") is about the first assignment: it must not move the second, which
    w1 runs."""
    wire.send(wire.state.client_releases_keys(CLIENT, ["t-5"], "release"))
    assert "t-5" not in wire.state.tasks
    wire.send(submit(wire.state, spec("t-5", restrictions=("w1",)), stimulus_id="again"))
    assert wire.state.tasks["t-5"].processing_on == W1
    wire.deliver_to_worker(W1)  # steal request (gives back), free-keys, compute-task again
    assert wire.workers[W1].tasks["t-5"].state == "ready"
    wire.deliver_to_scheduler(W1)
    assert wire.state.tasks["t-5"].processing_on == W1
    assert not any(m["key"] == "t-5" for m in wire.to_worker[W2] if "key" in m)
    assert [e["action"] for e in wire.events if e["key"] == "t-5"] == [
        "steal-request",
        "steal-stale",
    ]
    wire.settle()
    assert wire.runs["t-5"] == 1
    assert wire.state.tasks["t-5"].state == "memory"


def test_the_victim_gave_it_back_itself_and_it_was_placed_there_again(recorder):
    """w1 cannot fetch the input of its tasks from w2 and gives them back on its own
    (``reschedule``) before it reads the steal requests; the scheduler, which knows of another
    copy of the input, places them on w1 again at once. w1's answers ("unknown"), which come
    next on its stream, are about the first assignment: they must not release the second."""
    wire = Wire(recorder)
    wire.add_worker(W1)
    wire.add_worker(W2)
    wire.send(submit(wire.state, spec("x", restrictions=("w2",))))
    wire.settle()
    loose = [
        spec(f"t-{i}", "x", restrictions=("w1",))._replace(options={"loose": True})
        for i in range(6)
    ]
    wire.send(submit(wire.state, *loose, stimulus_id="graph-2"))
    wire.deliver_to_worker(W1)  # all wait for x, which w1 fetches from w2
    assert {ts.state for ts in wire.workers[W1].tasks.values()} == {"waiting", "flight"}
    wire.send(wire.stealing.balance())
    assert ("steal-request", "t-5") in wire.to_worker_ops(W1)
    # meanwhile x got a second copy, on w3 (a replicate, say), which w1 was not told of
    wire.add_worker(W3)
    wire.send(wire.state.add_replicas(W3, ["x"], "replicate"))
    # the fetch fails: w1 gives every task back, then reads the steal requests
    wire.follow(W1, wire.workers[W1].gather_failure(W2, ["x"], "gather-failed"))
    wire.deliver_to_worker(W1)
    ops = [msg["op"] for msg in wire.to_scheduler[W1]]
    assert ops.index("reschedule") < ops.index("steal-response")
    wire.deliver_to_scheduler(W1)
    assert wire.state.tasks["t-5"].processing_on == W1
    # t-5 was released there (the reschedule) and sent to w1 once more, with x on w3; the
    # answer added nothing
    sent = [m for m in wire.to_worker[W1] if "t-5" in (m.get("key"), *m.get("keys", ()))]
    assert [(m["op"], m["stimulus_id"]) for m in sent] == [
        ("free-keys", "gather-failed"),
        ("compute-task", "gather-failed"),
    ]
    assert sent[-1]["who_has"] == {"x": [W3]}
    assert [e["action"] for e in wire.events if e["key"] == "t-5"][-1] == "steal-stale"
    wire.fetches.clear()  # the failed fetch
    wire.settle()
    assert wire.runs["t-5"] == 1


def test_steals_asked_of_a_victim_that_died_are_forgotten(wire):
    """w1 dies with the requests unanswered: its tasks are placed again (on w2, once each) and
    nothing of the old steals stays behind to wait for an answer that will not come."""
    wire.to_worker[W1].clear()
    wire.send(wire.state.remove_worker(W1, "w1-died", expected=False))
    assert set(wire.stealing.aborted) == {"t-5", "t-4"} and not wire.stealing.in_flight
    wire.stealing.remove_worker(W1)
    assert not wire.stealing.aborted
    del wire.workers[W1]
    wire.settle()
    assert wire.runs == {"t-0": 2, **{f"t-{i}": 1 for i in range(1, 6)}}
