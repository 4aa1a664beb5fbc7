"""client.get_versions: Dask's shape, one version everywhere on this machine, and what a
mismatch does with check=True."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from storied.client.versions import _mismatches


def test_versions_have_dasks_shape_and_match_here(client: Any, dask_client: Any) -> None:
    ours = client.get_versions(check=True, packages=["psutil"])
    theirs = dask_client.get_versions(check=True)
    assert set(ours) == set(theirs) == {"scheduler", "workers", "client"}
    assert set(ours["workers"]) == set(client.scheduler_info()["workers"])
    assert set(ours["client"]["host"]) == set(theirs["client"]["host"])
    assert ours["client"]["host"]["python"] == theirs["client"]["host"]["python"]
    from importlib.metadata import version

    for info in [ours["client"], ours["scheduler"], *ours["workers"].values()]:
        assert info["packages"]["storied"] == version("storied")
        assert info["packages"]["psutil"]
    with pytest.raises(TypeError, match="package names"):
        client.get_versions(packages="numpy")


def test_a_mismatch_raises_for_needed_packages_and_warns_for_optional_ones(client: Any) -> None:
    versions = client.get_versions()
    worker = next(iter(versions["workers"]))
    older = copy.deepcopy(versions)
    older["workers"][worker]["packages"]["cloudpickle"] = "0.1"
    errors, notes = _mismatches(older)
    assert "cloudpickle" in errors and worker in errors and not notes
    other_numpy = copy.deepcopy(versions)
    other_numpy["scheduler"]["packages"]["numpy"] = "0.1"
    errors, notes = _mismatches(other_numpy)
    assert not errors and "numpy" in notes and "scheduler 0.1" in notes
