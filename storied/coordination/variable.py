"""Variable: one named value shared by clients and tasks, kept by the scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storied import config
from storied.coordination.client import Coordinated
from storied.coordination.values import pack_value, unpack_value

if TYPE_CHECKING:
    from storied.client.client import Client


class VariableState:
    """The scheduler's variables: name -> packed value (see ``values``)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}

    def set(self, name: str, packed: dict[str, Any]) -> list[str]:
        """Store ``packed``; returns the keys the old value held, which it holds no more."""
        old = self.values.get(name)
        self.values[name] = packed
        return list(old["keys"]) if old else []

    def get(self, name: str) -> dict[str, Any] | None:
        return self.values.get(name)

    def delete(self, name: str) -> list[str] | None:
        """None if there was no such variable, else the keys it held."""
        old = self.values.pop(name, None)
        return None if old is None else list(old["keys"])


class Variable(Coordinated):
    """A value or future under a name, as Dask's Variable: ``set``, ``get``, ``delete``.

    A future set here stays alive on the cluster until replaced or deleted, whoever made it.
    Values are pickled (Dask takes msgpack-able values only; storied takes any picklable one).
    """

    prefix = "variable"

    def __init__(self, name: str | None = None, client: Client | None = None) -> None:
        super().__init__(name, client)

    def set(self, value: Any) -> Any:
        return self._call(self._set, pack_value(value))

    async def _set(self, packed: dict[str, Any], caller: dict[str, Any]) -> None:
        await self._ask("variable-set", caller, value=packed)

    def get(self, timeout: float | str | None = None) -> Any:
        """The value; waits until one is set (``TimeoutError`` after ``timeout`` seconds)."""
        return self._call(self._get, config.parse_timedelta(timeout))

    async def _get(self, timeout: float | None, caller: dict[str, Any]) -> Any:
        packed = await self._ask("variable-get", caller, wait=timeout)
        if packed is None:
            raise TimeoutError(f"variable {self.name!r} was not set within {timeout}s")
        return unpack_value(self.client, packed)

    def delete(self) -> Any:
        """Remove the variable for everyone; its future (if any) is released."""
        return self._call(self._delete)

    async def _delete(self, caller: dict[str, Any]) -> None:
        await self._ask("variable-delete", caller)
