"""Published datasets: named values (often futures) that outlive the client publishing them.

``Client.publish_dataset``, ``get_dataset``, ``list_datasets``, ``unpublish_dataset`` and
``Client.datasets`` call in here; the futures of a published value stay alive on the cluster
until it is unpublished, and any client may get them.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from storied.coordination.client import who
from storied.coordination.values import pack_value, unpack_value

if TYPE_CHECKING:
    from storied.client.client import Client

#: ``get_dataset``'s default when none is given: a missing name is then a KeyError
NO_DEFAULT: Any = object()


class DatasetsState:
    """The scheduler's published datasets: name -> packed value (see ``values``)."""

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}

    def check_new(self, names: list[str], override: bool) -> None:
        """``KeyError`` (changing nothing) if any name is taken and ``override`` is false."""
        taken = [name for name in names if name in self.datasets]
        if taken and not override:
            raise KeyError(f"Dataset {taken[0]!r} already exists (pass override=True to replace)")

    def publish(self, name: str, packed: dict[str, Any]) -> list[str]:
        """Store ``packed``; returns the keys a replaced dataset held."""
        old = self.datasets.get(name)
        self.datasets[name] = packed
        return list(old["keys"]) if old else []

    def unpublish(self, name: str) -> list[str] | None:
        """None if there was no such dataset, else the keys it held."""
        old = self.datasets.pop(name, None)
        return None if old is None else list(old["keys"])

    def names(self) -> list[str]:
        return sorted(self.datasets)


def publish_dataset(client: Client, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``client.publish_dataset(*args, name=None, override=False, **datasets)``, as Dask's."""
    name = kwargs.pop("name", None)
    override = kwargs.pop("override", False)
    datasets = dict(kwargs)
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if not args:
            raise ValueError(
                "If name is provided, expecting call signature like publish_dataset(df, name='ds')"
            )
        datasets[name] = args[0] if len(args) == 1 else args
    elif args:
        raise ValueError("publish_dataset() takes its data by name: publish_dataset(x=data)")
    packed = {dataset: pack_value(value) for dataset, value in datasets.items()}
    return client._sync(
        client._request, "dataset-publish", who=who(), datasets=packed, override=bool(override)
    )


def get_dataset(client: Client, name: str, default: Any = NO_DEFAULT) -> Any:
    """The dataset ``name``, its futures now also this client's; ``KeyError`` if none."""
    return client._sync(_get_dataset, client, name, default, who())


async def _get_dataset(client: Client, name: str, default: Any, caller: dict[str, Any]) -> Any:
    packed = await client._request("dataset-get", who=caller, name=name)
    if packed is None:
        if default is NO_DEFAULT:
            raise KeyError(f"Dataset {name!r} not found")
        return default
    return unpack_value(client, packed)


def list_datasets(client: Client) -> Any:
    return client._sync(client._request, "dataset-list", who=who())


def unpublish_dataset(client: Client, name: str) -> Any:
    """Remove the dataset; its futures are released unless someone else holds them."""
    return client._sync(client._request, "dataset-unpublish", who=who(), name=name)


class Datasets(MutableMapping[str, Any]):
    """``client.datasets``: the published datasets as a mapping (blocking clients, but for
    reading an item)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _check_sync(self) -> None:
        if self._client.asynchronous:
            raise TypeError(
                "client.datasets blocks; with an asynchronous client, await "
                "client.get_dataset() / client.publish_dataset() instead"
            )

    def __getitem__(self, name: str) -> Any:
        """The dataset (an awaitable with an asynchronous client); ``KeyError`` if none."""
        return get_dataset(self._client, name)

    def __setitem__(self, name: str, value: Any) -> None:
        """Publish; ``KeyError`` if the name is taken, as in Dask."""
        self._check_sync()
        publish_dataset(self._client, (value,), {"name": name})

    def __delitem__(self, name: str) -> None:
        self._check_sync()
        unpublish_dataset(self._client, name)

    def __contains__(self, name: object) -> bool:
        self._check_sync()
        return name in list_datasets(self._client)

    def __iter__(self) -> Iterator[str]:
        self._check_sync()
        return iter(list_datasets(self._client))

    def __len__(self) -> int:
        self._check_sync()
        return len(list_datasets(self._client))
