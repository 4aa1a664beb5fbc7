"""docs/dask-compatibility.md tells the truth about every public name of dask.distributed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import storied
from storied import Client, LocalCluster, compat

PAGE = Path(__file__).resolve().parents[2] / compat.PAGE
ROW = re.compile(r"^\| `([A-Za-z_]+)` \| (same|differs|not supported) \|", re.MULTILINE)
OWNERS = {"The `storied` module": "storied", "`Client`": "Client", "`Future`": "Future"}
OWNERS["`LocalCluster`"] = "LocalCluster"


def page_tables() -> dict[str, dict[str, str]]:
    """owner -> name -> status, as the page says."""
    tables: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", PAGE.read_text(), flags=re.MULTILINE)[1:]:
        title = section.splitlines()[0].strip()
        if title in OWNERS:
            tables[OWNERS[title]] = dict(ROW.findall(section))
    return tables


@pytest.fixture(scope="module")
def objects() -> Iterator[dict[str, Any]]:
    """A live instance of each owner, for attributes that exist only on instances."""
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        future = client.submit(abs, -1)
        future.result()
        yield {"storied": storied, "Client": client, "Future": future, "LocalCluster": cluster}


def test_every_public_name_of_dask_distributed_is_on_the_page() -> None:
    distributed = pytest.importorskip("distributed")

    def public(obj: Any) -> set[str]:
        return {name for name in dir(obj) if not name.startswith("_")}

    theirs = {
        "storied": set(distributed.__all__),
        "Client": public(distributed.Client),
        "Future": public(distributed.Future),
        "LocalCluster": public(distributed.LocalCluster),
    }
    tables = page_tables()
    for owner, names in theirs.items():
        assert sorted(names - set(tables[owner])) == [], f"{owner} names missing from the page"


def test_what_the_page_calls_supported_exists(objects: dict[str, Any]) -> None:
    absent = [
        f"{owner}.{name}"
        for owner, table in page_tables().items()
        for name, status in table.items()
        if status != "not supported" and not hasattr(objects[owner], name)
    ]
    assert absent == []


def test_what_the_page_calls_not_supported_says_so(objects: dict[str, Any]) -> None:
    for owner, table in page_tables().items():
        unsupported = {name for name, status in table.items() if status == "not supported"}
        assert unsupported == set(compat.NOT_SUPPORTED[owner]), owner
        for name in unsupported:
            with pytest.raises(NotImplementedError, match=re.escape(compat.PAGE)):
                getattr(objects[owner], name)
            assert not hasattr(objects[owner], name)


def test_an_unknown_name_is_a_plain_attribute_error(objects: dict[str, Any]) -> None:
    for owner, obj in objects.items():
        with pytest.raises(AttributeError) as raised:
            obj.no_such_thing  # noqa: B018
        assert not isinstance(raised.value, NotImplementedError), owner
