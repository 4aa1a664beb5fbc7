"""``client.run(..., on_error=)``: what a worker's failure becomes, as in Dask (and
``wait=False`` / ``nanny=True``, refused at the caller).

``"raise"`` (the default) raises the first failure at the caller; ``"return"`` puts each
failing worker's exception in the answer in place of its result; ``"ignore"`` leaves failing
workers out. For the last two the function travels wrapped in ``CatchErrors``, which hands
the exception back as a value (a ``RunError``) instead of failing the whole call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from storied.compat import PAGE, NotSupportedError

ON_ERROR = ("raise", "return", "ignore")


def check_options(wait: bool, nanny: bool, on_error: str) -> None:
    """``run``'s own options, refused at the caller rather than passed to the function."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
    if not wait or nanny:
        raise NotSupportedError(
            "client.run(wait=False) and client.run(nanny=True) (from dask.distributed) are not "
            f"supported by storied: run waits for the workers, whose nannies run no user code. "
            f"See {PAGE}."
        )


class RunError:
    """A worker's exception, carried back as a result."""

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception


class CatchErrors:
    """Calls the function as the worker would (same signature, so ``dask_worker`` is still
    passed), turning its exception into a ``RunError``; sync and async functions alike."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self.func(*args, **kwargs)
        except Exception as exc:
            return RunError(exc)
        return self._awaited(result) if inspect.iscoroutine(result) else result

    @staticmethod
    async def _awaited(coroutine: Any) -> Any:
        try:
            return await coroutine
        except Exception as exc:
            return RunError(exc)


def outcome(results: dict[str, Any], on_error: str) -> dict[str, Any]:
    """The answer of ``run``: exceptions in place (``return``) or left out (``ignore``)."""
    answer = {}
    for address, result in results.items():
        if isinstance(result, RunError):
            if on_error == "ignore":
                continue
            result = result.exception
        answer[address] = result
    return answer
