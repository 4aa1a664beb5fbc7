"""Ledger integrity: one writer per file, damage refused at open and recovered, read-only files
readable, a full disk on the record while the scheduler goes on, and directories of ledgers."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from storied import Client, LocalCluster
from storied.cli.main import cli
from storied.record import Ledger, LedgerCorruptError, LedgerError, LedgerLockedError, Record
from storied.record.executions import block_executions
from storied.record.ledger import PAGE_SIZE, SCHEMA_VERSION
from storied.record.recovery import check
from storied.record.writelock import lock_path_of
from tests.ledger.test_durable import free_port, inc, storied_command
from tests.record.old_versions import make_version_6


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def start_scheduler(path: Path, **popen: object) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "storied",
            "scheduler",
            "--port",
            str(port),
            "--ledger",
            str(path),
            "--dashboard-address",
            "none",
        ],
        env={**os.environ, "STORIED_AUTH_TOKEN": ""},
        text=True,
        **popen,  # type: ignore[arg-type]
    )
    return process, f"tcp://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def write_ledger(path: Path, tasks: int, address: str = "tcp://s:1") -> None:
    """A closed ledger of ``tasks`` tasks: two transitions and an execution each, some events."""
    record = Record(ledger=Ledger(path), run_info={"address": address})
    for i in range(tasks):
        key = f"inc-{i}"
        record.transition(key, "released", "waiting", {key: "processing"}, f"graph-{i // 100}")
        record.transition(key, "waiting", "memory", {}, f"done-{i}")
        record.execution(key, "tcp://w:1", 1, 1_700_000_000.0 + i, 1_700_000_000.5 + i, "memory")
        if i % 100 == 0:
            record.event(["runtimes"], {"i": i}, "tcp://w:1")
        if i % 1_000 == 999:
            record.flush()  # a batch at a time, as a running scheduler writes them
    record.close()


# ---------------------------------------------------------------------- one writer per file


def test_a_second_scheduler_on_a_ledger_file_is_refused_with_the_holders_pid(tmp_path):
    path = tmp_path / "ledger.db"
    first, address = start_scheduler(path, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: f'"pid": {first.pid}' in _read(lock_path_of(path)), "the lock")
        with Client(address, timeout=20) as client:  # it serves while it holds the file
            assert client.scheduler_info()["address"] == address

        second = storied_command(
            "scheduler", "--port", "0", "--ledger", str(path), "--dashboard-address", "none"
        )
        assert second.returncode != 0
        assert f"the ledger {path} is being written by another process" in second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr

        with pytest.raises(LedgerLockedError, match=f"pid {first.pid}"):
            Ledger(path).start_run({})
        # readers need no lock
        assert len(Ledger(path).runs()) == 1
        assert invoke("runs", "--ledger", str(path)).exit_code == 0

        first.send_signal(signal.SIGKILL)  # the OS drops the lock with the process
        first.wait(10)
    finally:
        stop(first)
    with LocalCluster(n_workers=1, processes=False, ledger=path) as cluster, Client(cluster):
        assert lock_path_of(path).exists()
    assert not lock_path_of(path).exists()  # a clean close leaves nothing behind
    assert [run["run_id"] for run in Ledger(path).runs()] == [1, 2]


def test_one_process_cannot_hold_two_writers_on_a_file_either(tmp_path):
    path = tmp_path / "ledger.db"
    first = Ledger(path)
    first.start_run({})
    try:
        with pytest.raises(LedgerLockedError, match=f"pid {os.getpid()}"):
            Ledger(path).start_run({})
        first.start_run({})  # the holder may start more runs
    finally:
        first.close()
    second = Ledger(path)
    second.start_run({})
    second.close()
    assert len(Ledger(path).runs()) == 3


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------- damage


def count_blocks(path: Path, readable: bool = True) -> int:
    """Transition blocks in the file; of a damaged one, as many as its highest id says."""
    column = "count(*)" if readable else "max(block_id)"
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"SELECT {column} FROM transition_blocks").fetchone()[0]


def page_of_execution(path: Path, key: str) -> int:
    """The page where the execution block holding ``key``'s execution starts (SQLite numbers
    pages from 1)."""
    with closing(sqlite3.connect(path)) as conn:
        pages = {
            number - 1
            for (number,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'execution_blocks'"
            )
        }
        blob = next(
            blob
            for (blob,) in conn.execute("SELECT entries FROM execution_blocks")
            if key in {execution[0] for execution in block_executions(blob)}
        )
    content = path.read_bytes()
    found = [m.start() // PAGE_SIZE for m in re.finditer(re.escape(blob[:64]), content)]
    return next(page for page in found if page in pages)


def test_a_ledger_damaged_in_the_middle_is_refused_at_open_and_recovered(tmp_path):
    path = tmp_path / "ledger.db"
    write_ledger(path, 12_000)
    before = Ledger(path)
    first_story, last_story = before.story("inc-1"), before.story("inc-11999")
    written, executed = before.transitions(), before.executions()
    assert check(path) == []
    # garbage over three pages in the middle, from the one where the block that holds
    # inc-6000's execution starts
    page = page_of_execution(path, "inc-6000")
    assert 0 < page < path.stat().st_size // PAGE_SIZE - 3
    with open(path, "r+b") as stream:
        stream.seek(page * PAGE_SIZE)
        stream.write(random.Random(1).randbytes(3 * PAGE_SIZE))

    with pytest.raises(LedgerCorruptError, match="the file is damaged"):
        Ledger(path).start_run({})
    refused = storied_command(
        "scheduler", "--port", "0", "--ledger", str(path), "--dashboard-address", "none"
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"write the ledger {path}: " in refused.stderr
    assert "the file is damaged" in refused.stderr
    assert f"storied ledger recover {path}" in refused.stderr
    assert not lock_path_of(path).exists()

    checked = invoke("ledger", "check", str(path))
    assert checked.exit_code == 1
    header, first_problem, *_ = checked.output.splitlines()
    assert header == f"{path}: damaged" and first_problem.startswith("  ")

    recovered_path = tmp_path / "ledger.recovered.db"
    recovered = invoke("ledger", "recover", str(path))
    assert recovered.exit_code == 0, recovered.output
    assert f"recovered {path} into {recovered_path}: what is listed above was lost" in (
        recovered.output
    )
    lost = re.search(r"execution_blocks: \d+ rows copied; lost ", recovered.output)
    assert lost, recovered.output
    assert invoke("ledger", "check", str(recovered_path)).output.strip().endswith(": ok")

    after = Ledger(recovered_path)
    kept_executions = after.executions()
    assert 0 < len(kept_executions) < len(executed)
    assert "inc-6000" not in {execution["key"] for execution in kept_executions}
    assert all(execution in executed for execution in kept_executions[:100])  # none made up
    kept = after.transitions()
    by_seq = {rec.seq: rec for rec in written}
    assert all(by_seq[rec.seq] == rec for rec in kept)  # none made up; any lost were listed:
    lost_blocks = count_blocks(path, readable=False) - count_blocks(recovered_path)
    assert len(written) - len(kept) <= lost_blocks * 1_000
    assert after.story("inc-1") == first_story and after.story("inc-11999") == last_story
    # the recovered file takes new runs, numbered on after the old ones
    writer = Ledger(recovered_path)
    run_id = writer.start_run({})
    writer.close()
    assert writer.first_seq(run_id) > max(rec.seq for rec in kept)
    assert invoke("ledger", "recover", str(path)).exit_code != 0  # never overwrites


def test_reading_a_damaged_ledger_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / "ledger.db"
    write_ledger(path, 200)
    with open(path, "r+b") as stream:  # page 1 holds the schema: nothing can be found
        stream.seek(100)
        stream.write(b"\xff" * 4_000)
    result = invoke("runs", "--ledger", str(path))
    assert result.exit_code != 0
    assert f"cannot read the ledger {path}" in result.output
    assert "storied ledger recover" in result.output


# ---------------------------------------------------------------------- read-only


def as_nobody(action: Callable[[], str]) -> str:
    """``action()`` run in a forked child as user nobody (root reads and writes anything)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            output = action()
        except BaseException as error:
            output = f"child failed: {type(error).__name__}: {error}"
        os.write(write_end, output.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        output = stream.read().decode()
    os.waitpid(pid, 0)
    return output


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
def test_a_read_only_ledger_in_a_read_only_directory_is_readable():
    # pytest's own temporary directories are closed to other users: make one in /tmp
    directory = Path(tempfile.mkdtemp(prefix="storied-archive-"))
    try:
        for parent in directory.parents:
            if parent.stat().st_mode & 0o005 != 0o005:
                pytest.skip(f"user nobody cannot reach {directory}: {parent} is closed")
        path = directory / "ledger.db"
        write_ledger(path, 50)

        def read_all() -> dict[str, str]:
            return {
                "runs": invoke("runs", "--ledger", str(path), "--json").output,
                "story": invoke("story", "inc-7", "--ledger", str(path)).output,
                "tasks": invoke("tasks", "--ledger", str(directory), "--json").output,
            }

        def read_all_then_write() -> str:
            found = read_all()
            try:
                Ledger(path).start_run({})
                found["write"] = "written"
            except LedgerError as error:
                found["write"] = str(error)
            return json.dumps(found)

        expected = read_all()  # as root, while it is writable
        for leftover in directory.glob("ledger.db-*"):  # the readers' WAL index
            leftover.unlink()
        path.chmod(0o444)
        directory.chmod(0o555)
        found = json.loads(as_nobody(read_all_then_write))
        assert sorted(p.name for p in directory.iterdir()) == ["ledger.db"]
    finally:
        directory.chmod(0o755)
        shutil.rmtree(directory)
    assert "inc-7" in expected["story"] and '"run_id": "ledger.db:1"' in expected["tasks"]
    assert {name: found.get(name) for name in expected} == expected
    assert f"cannot write the ledger {path}" in found["write"]
    assert "read-only" in found["write"]


# ---------------------------------------------------------------------- a full disk


def test_a_full_disk_is_on_the_record_and_the_scheduler_goes_on(tmp_path):
    """A file size limit makes the ledger's writes fail as a full disk does."""
    path = tmp_path / "ledger.db"
    limit = 3 * 1024 * 1024

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    scheduler, address = start_scheduler(path, stderr=subprocess.PIPE, preexec_fn=limit_file_size)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(scheduler.stderr), daemon=True)
    reader.start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "storied", "worker", address],
        env={**os.environ, "STORIED_AUTH_TOKEN": ""},
        stderr=subprocess.DEVNULL,
    )
    try:
        with Client(address, timeout=20) as client:
            client.wait_for_workers(1, timeout=20)

            def failed() -> bool:
                client.gather(client.map(inc, range(2_000)))
                return any(event.get("cause") for _, event in client.get_events("ledger"))

            wait_for(failed, "a ledger write to fail", timeout=120)
            causes = [event["cause"] for _, event in client.get_events("ledger") if event["cause"]]
            assert str(path) in causes[-1] and "cannot write the ledger" in causes[-1]
            assert client.submit(inc, 41, pure=False).result(timeout=20) == 42
            assert client.story(client.submit(inc, 1, key="after-full").key)
    finally:
        for process in (worker, scheduler):
            stop(process)
        reader.join(10)
    logged = "".join(errors)
    assert f"cannot write the ledger {path}: disk I/O error" in logged
    assert "records dropped (history stays in memory; the scheduler goes on)" in logged
    assert logged.count("Traceback") == 1  # the first failure in full, then one line a second


# ---------------------------------------------------------------------- directories


def test_the_cli_reads_every_ledger_in_a_directory(tmp_path):
    for name, tasks in (("a.db", 3), ("b.db", 5)):
        with (
            LocalCluster(n_workers=1, processes=False, ledger=tmp_path / name) as cluster,
            Client(cluster) as client,
        ):
            assert client.gather(client.map(inc, range(tasks))) == list(range(1, tasks + 1))
            client.submit(inc, 0, key="shared").result()
            client.log_event("ops", {"from": name})
    directory = str(tmp_path)

    runs = [
        json.loads(line)
        for line in invoke("runs", "--ledger", directory, "--json").output.splitlines()
    ]
    assert [run["run_id"] for run in runs] == ["a.db:1", "b.db:1"]
    assert [run["tasks"] for run in runs] == [4, 6]
    assert runs[0]["ledger"] == str(tmp_path / "a.db")

    story = invoke("story", "shared", "--ledger", directory)
    rows = story.output.splitlines()[1:]
    assert {row.split()[0] for row in rows} == {"a.db:1", "b.db:1"}
    only_b = invoke("story", "shared", "--ledger", directory, "--run", "b.db:1", "--json")
    assert {json.loads(line)["run_id"] for line in only_b.output.splitlines()} == {"b.db:1"}

    events = invoke("events", "ops", "--ledger", directory, "--json").output.splitlines()
    assert [(json.loads(e)["run_id"], json.loads(e)["msg"]) for e in events] == [
        ("a.db:1", {"from": "a.db"}),
        ("b.db:1", {"from": "b.db"}),
    ]
    logs = invoke("logs", "--ledger", directory, "--json").output.splitlines()
    assert {json.loads(line)["run_id"] for line in logs} == {"a.db:1", "b.db:1"}

    tasks = invoke("tasks", "--ledger", directory, "--prefix", "shared", "--json")
    assert [json.loads(line)["run_id"] for line in tasks.output.splitlines()] == [
        "a.db:1",
        "b.db:1",
    ]
    trace = tmp_path / "trace.json"
    timeline = invoke("timeline", "--ledger", directory, "--run", "all", "-o", str(trace))
    assert "wrote 10 task executions of every run" in timeline.output

    unknown = invoke("story", "shared", "--ledger", directory, "--run", "1")
    assert unknown.exit_code != 0 and "FILE:ID" in unknown.output
    in_one_file = invoke("story", "shared", "--ledger", str(tmp_path / "a.db"), "--run", "a.db:1")
    assert in_one_file.exit_code != 0 and "in one ledger file a run is its number" in (
        in_one_file.output
    )


def downgrade_to_version_4(path: Path) -> None:
    """Make ``path`` what a ledger of schema version 4 was: version 5 without the summaries."""
    make_version_6(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE run_tasks")
        conn.execute("DROP TABLE run_counts")
        conn.execute("UPDATE meta SET value = '4' WHERE name = 'schema_version'")


def test_a_version_4_ledger_is_checked_and_recovered_into_the_current_version(tmp_path):
    path = tmp_path / "old.db"
    write_ledger(path, 300)
    downgrade_to_version_4(path)
    before = Ledger(path)
    written, executed = before.transitions(), before.executions()
    assert invoke("ledger", "check", str(path)).output.strip().endswith(": ok")

    recovered = invoke("ledger", "recover", str(path))
    assert recovered.exit_code == 0, recovered.output
    target = tmp_path / "old.recovered.db"
    assert f"recovered {path} into {target}: nothing was lost" in recovered.output
    assert "run_tasks" not in recovered.output  # no table of version 5 reported lost
    with closing(sqlite3.connect(path)) as conn:  # the source is only read
        assert conn.execute("SELECT value FROM meta").fetchone() == ("4",)
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    after = Ledger(target)
    assert after.transitions() == written and after.executions() == executed
    [run] = after.runs()
    assert after.task_counts(run["run_id"]) is None  # a run of version 4 has no summary
    assert len(after.tasks(run_id=run["run_id"])) == 300  # readers count it from its records
    assert invoke("ledger", "check", str(target)).output.strip().endswith(": ok")


def test_a_ledger_of_an_unknown_version_is_not_recovered(tmp_path):
    path = tmp_path / "future.db"
    write_ledger(path, 10)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    result = CliRunner().invoke(cli, ["ledger", "recover", str(path)])
    assert result.exit_code != 0
    assert f"schema version {SCHEMA_VERSION + 1}" in result.output
    assert "use the storied that wrote it" in result.output
    assert not (tmp_path / "future.recovered.db").exists()
