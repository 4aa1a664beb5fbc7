"""The parts of the memory budget that need no cluster: the pure state machine's pause, the
limit's parsing, the spill buffer, and clear errors for bad input."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner
from worker.test_state import compute, executed, succeed

from storied import LocalCluster, Worker, config
from storied.cli.main import cli
from storied.worker.memory import SpillBuffer, parse_memory_limit, sizeof, system_memory
from storied.worker.state import WorkerState


def test_a_paused_state_starts_nothing_until_unpaused(recorder):
    state = WorkerState(nthreads=1, recorder=recorder)
    assert executed(compute(state, "a")) == ["a"]
    assert state.pause("pause-1") == []
    assert executed(compute(state, "b")) == [], "b waits: the worker is paused"
    assert executed(succeed(state, "a")) == [], "a finished, but its slot stays empty"
    assert recorder.path("b") == ["released", "ready"]
    assert executed(state.unpause("unpause-1")) == ["b"]
    assert recorder.transitions[-1] == ("b", "ready", "executing", {}, "unpause-1", None)


def test_memory_limits_read_as_dask_reads_them():
    total = system_memory()
    assert parse_memory_limit(None) is None
    assert parse_memory_limit(0) is None
    assert parse_memory_limit("0") is None
    assert parse_memory_limit("200MB") == 200_000_000
    assert parse_memory_limit("1GiB") == min(2**30, total)
    assert parse_memory_limit(123_456_789) == min(123_456_789, total)
    assert parse_memory_limit(0.5) == int(total * 0.5)
    assert parse_memory_limit("0.25") == int(total * 0.25)
    assert parse_memory_limit("auto", n_workers=4) == int(total / 4)
    cores = os.cpu_count() or 1
    assert parse_memory_limit("auto", nthreads=1) == int(total * min(1, 1 / cores))
    assert parse_memory_limit("1PB") == total, "never more than the system has"


@pytest.mark.parametrize("bad", ["lots", "-5GB", [1], True])
def test_a_bad_memory_limit_is_a_clear_error_at_the_caller(bad):
    with pytest.raises((TypeError, ValueError), match="memory_limit"):
        Worker("tcp://127.0.0.1:1", memory_limit=bad)
    with pytest.raises((TypeError, ValueError), match="memory_limit"):
        LocalCluster(n_workers=1, memory_limit=bad, dashboard_address=None)


def test_a_bad_memory_limit_on_the_command_line_stops_storied_worker():
    result = CliRunner().invoke(cli, ["worker", "tcp://127.0.0.1:1", "--memory-limit", "lots"])
    assert result.exit_code == 2
    assert "--memory-limit" in result.output and "'lots'" in result.output


def test_a_bad_memory_fraction_in_config_is_a_clear_error():
    with (
        config.set({"worker.memory.pause": 80}),
        pytest.raises(ValueError, match=r"worker\.memory\.pause .* \(0, 1\]"),
    ):
        Worker("tcp://127.0.0.1:1", memory_limit="1GB")


def test_the_spill_buffer_keeps_the_newest_in_memory_and_reads_back_from_disk(tmp_path):
    buffer = SpillBuffer(str(tmp_path), target=250)
    for i in range(5):
        buffer[f"x{i}"] = bytes([i]) * 100
    assert set(buffer.fast) == {"x3", "x4"}, "the least recently used went to disk"
    assert sorted(name.split("#")[0] for name in os.listdir(tmp_path)) == ["x0", "x1", "x2"]
    assert (buffer.memory_bytes, buffer.spilled_bytes) == (200, 300)
    assert buffer["x0"] == bytes([0]) * 100, "read back"
    assert set(buffer.fast) == {"x4", "x0"}, "x0 back in memory, x3 made room"
    del buffer["x1"]
    assert buffer.spilled_bytes == 200, "x2 and x3"
    assert buffer.evict_bytes(150) == 200, "whole values: x4, then x0"
    assert not buffer.fast
    assert buffer.take_counts() == {"spilled": [6, 600], "unspilled": [1, 100]}
    assert buffer.take_counts() == {"spilled": [0, 0], "unspilled": [0, 0]}


class Proxy:
    """Answers every attribute by raising, as an actor proxy without a client does."""

    def __getattr__(self, name: str) -> None:
        raise ValueError(f"no {name} here")


class Unweighable:
    def __sizeof__(self) -> int:
        raise RuntimeError("cannot say")


def test_sizeof_weighs_what_values_hold():
    assert sizeof(b"x" * 1000) == 1000
    assert sizeof(memoryview(bytearray(64))) == 64
    assert sizeof([b"x" * 1000] * 100) >= 100_000
    assert sizeof({i: b"x" * 100 for i in range(1000)}) >= 100_000
    assert sizeof(Proxy()) == sys.getsizeof(Proxy()), "a proxy is not asked for attributes"
    assert sizeof(Unweighable()) > 0
    np = pytest.importorskip("numpy")
    assert sizeof(np.zeros(1000)) == 8000
    pd = pytest.importorskip("pandas")
    assert sizeof(pd.DataFrame({"a": np.zeros(1000)})) >= 8000
