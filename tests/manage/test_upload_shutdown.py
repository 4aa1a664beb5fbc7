"""upload_file (.py, .zip, .egg; workers joining later get it; an import error is raised at
the caller) and shutdown (scheduler, workers and nannies all close, nothing restarts)."""

from __future__ import annotations

import zipfile

import pytest
from distributed import Client as DaskClient
from distributed import LocalCluster as DaskLocalCluster

from storied import Client, LocalCluster

from .helpers import alive, events, wait_until


def read_attribute(module: str, attribute: str) -> object:
    import importlib

    return getattr(importlib.import_module(module), attribute)


@pytest.fixture
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local:
        yield local


def test_upload_a_module_then_a_new_version_and_a_late_worker_gets_it(cluster, tmp_path):
    source = tmp_path / "storied_upload_probe.py"
    source.write_text("VALUE = 1\n")
    with Client(cluster) as client:
        reply = client.upload_file(source)
        assert set(reply) == set(client.nthreads())
        assert all(modules == ["storied_upload_probe"] for modules in reply.values())
        run = client.run(read_attribute, "storied_upload_probe", "VALUE")
        assert set(run.values()) == {1}
        source.write_text("VALUE = 2\n")
        client.upload_file(str(source))
        assert set(client.run(read_attribute, "storied_upload_probe", "VALUE").values()) == {2}
        assert client.submit(read_attribute, "storied_upload_probe", "VALUE").result() == 2
        cluster.scale(3)
        client.wait_for_workers(3, timeout=30)
        assert set(client.run(read_attribute, "storied_upload_probe", "VALUE").values()) == {2}
        uploads = events(client, "upload-file", "upload-file")
        by_client = [e for e in uploads if "client" in e]
        assert [e["filename"] for e in by_client] == ["storied_upload_probe.py"] * 2
        assert len(uploads) - len(by_client) == 2 + 2 + 1  # each worker's import, the late one's


def test_upload_a_zip_and_an_egg_of_packages(cluster, tmp_path):
    with Client(cluster) as client:
        for suffix in (".zip", ".egg"):
            package = f"storied_pkg_{suffix[1:]}"
            archive = tmp_path / f"bundle{suffix}"
            with zipfile.ZipFile(archive, "w") as bundle:
                bundle.writestr(f"{package}/__init__.py", f"NAME = {package!r}\n")
            reply = client.upload_file(archive)
            assert all(modules == [package] for modules in reply.values())
            assert client.submit(read_attribute, package, "NAME").result() == package


def test_an_import_error_is_raised_at_the_caller_and_bad_names_are_refused(cluster, tmp_path):
    broken = tmp_path / "storied_broken_probe.py"
    broken.write_text("raise RuntimeError('this module does not import')\n")
    with Client(cluster) as client:
        with pytest.raises(RuntimeError, match="does not import"):
            client.upload_file(broken)
        with pytest.raises(ValueError, match=r"\.py, \.zip or \.egg"):
            client.upload_file(tmp_path / "notes.txt")
        with pytest.raises(FileNotFoundError):
            client.upload_file(tmp_path / "missing.py")
        assert client.submit(len, "still works").result() == 11


def test_upload_returns_a_dict_by_worker_as_dask_does(tmp_path):
    source = tmp_path / "storied_shape_probe.py"
    source.write_text("X = 1\n")
    with (
        DaskLocalCluster(n_workers=1, processes=False, dashboard_address=":0") as dask_cluster,
        DaskClient(dask_cluster) as dask_client,
    ):
        theirs = dask_client.upload_file(str(source))
        workers = set(dask_client.nthreads())
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        ours = client.upload_file(str(source))
        assert set(ours) == set(client.nthreads())
    assert isinstance(theirs, dict) and isinstance(ours, dict)
    assert set(theirs) == workers


def test_shutdown_closes_scheduler_workers_and_nannies_for_good():
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    assert client.submit(len, "abc").result() == 3
    pids = [
        pid
        for worker in client.scheduler_info()["workers"].values()
        for pid in (worker["pid"], worker["nanny_pid"])
    ]
    scheduler = cluster.scheduler
    client.shutdown()
    assert client.status == "closed"
    assert scheduler.status == "closed"
    assert cluster.status == "closed"
    wait_until(lambda: not any(alive(pid) for pid in pids))
    ends = [e for _, e in scheduler.get_events("shutdown") if e.get("action") == "shutdown"]
    assert len(ends) == 1 and len(ends[0]["workers"]) == 2
