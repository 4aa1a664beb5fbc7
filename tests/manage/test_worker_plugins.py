"""The ready-made worker plugins of dask.distributed: UploadFile and Environ, on every worker
and on the record; bad arguments refused where the plugin is made."""

from __future__ import annotations

import os

import pytest

from storied import Client, Environ, UploadFile

from .helpers import events, wait_until


def read_attribute(module: str, attribute: str) -> object:
    import importlib

    return getattr(importlib.import_module(module), attribute)


def unset(name: str) -> None:
    os.environ.pop(name, None)


def test_upload_file_plugin_imports_the_file_on_every_worker(client: Client, tmp_path) -> None:
    source = tmp_path / "storied_plugin_upload_probe.py"
    source.write_text("VALUE = 7\n")
    plugin = UploadFile(source)
    source.write_text("VALUE = 8\n")  # read when the plugin was made, as Dask's
    client.register_plugin(plugin)
    try:
        values = client.run(read_attribute, "storied_plugin_upload_probe", "VALUE")
        assert set(values) == set(client.nthreads()) and set(values.values()) == {7}
        assert client.submit(read_attribute, "storied_plugin_upload_probe", "VALUE").result() == 7
        uploaded = wait_until(
            lambda: [
                e
                for e in events(client, "upload-file", "upload-file")
                if e["filename"] == "storied_plugin_upload_probe.py"
            ]
        )
        assert all(e["modules"] == ["storied_plugin_upload_probe"] for e in uploaded)
    finally:
        client.unregister_worker_plugin(plugin.name)


def test_upload_file_refuses_what_it_would_not_import(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a module")
    with pytest.raises(ValueError, match=r"\.py, \.zip or \.egg"):
        UploadFile(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        UploadFile(tmp_path / "missing.py")


def test_environ_plugin_sets_the_variables_in_every_worker(client: Client) -> None:
    name = "STORIED_ENVIRON_PROBE"
    started = set(client.run(os.getpid).values())
    client.register_plugin(Environ({name: 12}))
    try:
        values = client.run(os.getenv, name)
        assert set(values) == set(client.nthreads()) and set(values.values()) == {"12"}
        assert client.submit(os.getenv, name, pure=False).result() == "12"
        assert set(client.run(os.getpid).values()) == started  # set in place, not restarted
        logged = wait_until(lambda: events(client, "environ", "environ"))
        assert all(e["variables"] == [name] for e in logged)
    finally:
        client.unregister_worker_plugin("environ")
        client.run(unset, name)


def test_environ_takes_a_dict() -> None:
    with pytest.raises(TypeError, match="dict of variables"):
        Environ(["STORIED_X=1"])  # type: ignore[arg-type]
    assert Environ().environ == {}
