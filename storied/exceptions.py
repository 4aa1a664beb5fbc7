"""Exceptions users may catch."""


class KilledWorker(Exception):
    """A task was running on a worker that died too many times; it is suspected of the deaths."""

    def __init__(self, key: str, last_worker: str, allowed_failures: int) -> None:
        super().__init__(
            f"Attempted to run task {key!r} on {allowed_failures + 1} different workers, "
            f"but all those workers died while running it. The last worker was {last_worker}."
        )
        self.key = key
        self.last_worker = last_worker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self)._rebuild, (self.args[0], self.key, self.last_worker))

    @classmethod
    def _rebuild(cls, text: str, key: str, last_worker: str) -> "KilledWorker":
        exc = cls.__new__(cls)
        Exception.__init__(exc, text)
        exc.key, exc.last_worker = key, last_worker
        return exc


class CancelledError(Exception):
    """The future was cancelled before it finished."""


class FutureLostError(Exception):
    """The data behind a future was lost and cannot be recomputed (it was scattered)."""


class BaseExceptionCarrier(Exception):
    """Carries a ``SystemExit`` or ``KeyboardInterrupt`` that is a task's or a remote call's
    error through an event loop: raised as itself inside a loop's task, it would stop the loop.
    The thread waiting for the outcome raises the original (``storied.loop.LoopThread.run``)."""

    def __init__(self, exception: BaseException) -> None:
        super().__init__(exception)
        self.exception = exception

    @classmethod
    def wrap(cls, exc: BaseException) -> BaseException:
        """``exc`` itself, or carried if it would stop a loop."""
        return cls(exc) if isinstance(exc, (SystemExit, KeyboardInterrupt)) else exc
