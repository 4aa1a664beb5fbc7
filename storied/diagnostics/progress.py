"""``progress``: bars of how many of some futures are done, per task prefix, as Dask's.

It follows the client's own futures: each key's state calls back once it is done (on the
client's loop), so a bar costs the scheduler nothing, not a single request.
"""

from __future__ import annotations

import queue
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from storied.client.future import Future
from storied.client.futures_of import futures_of
from storied.dashboard.views import key_prefix

#: how often a terminal bar redraws its elapsed time while nothing finishes (seconds)
REDRAW_INTERVAL = 0.1


class ProgressGroups:
    """Per group (a task prefix by default): how many keys there are, how many are done, how
    many of those failed. Pure bookkeeping, fed the keys as they finish."""

    def __init__(self, keys: Iterable[str], group_of: Callable[[str], str]) -> None:
        self.group_of = group_of
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.erred: dict[str, int] = {}
        self._pending: set[str] = set()
        for key in keys:
            if key in self._pending:
                continue
            self._pending.add(key)
            group = group_of(key)
            self.total[group] = self.total.get(group, 0) + 1
            self.done.setdefault(group, 0)
            self.erred.setdefault(group, 0)

    @property
    def remaining(self) -> int:
        return len(self._pending)

    def finish(self, key: str, failed: bool) -> str | None:
        """``key`` is done; returns its group, or None when it was not tracked or done already."""
        if key not in self._pending:
            return None
        self._pending.discard(key)
        group = self.group_of(key)
        self.done[group] += 1
        if failed:
            self.erred[group] += 1
        return group


def progress(
    *futures: Any,
    notebook: bool | None = None,
    multi: bool = True,
    complete: bool = True,
    group_by: str | Callable[[str], str] = "prefix",
    file: TextIO | None = None,
) -> Any:
    """Show how the work behind ``futures`` (futures, persisted collections, or lists/dicts of
    them) progresses, as Dask's ``progress``.

    In a terminal it blocks until all are done, drawing ``tqdm`` bars (on ``file``, default
    stdout): one per task prefix with ``multi=True``, else one. In Jupyter (``notebook=None``
    guesses) with ipywidgets installed it returns a widget at once. ``complete=False`` leaves
    out what is done already. A task that fails counts as done, and its bar says how many erred.
    """
    found = _tracked_futures(futures)
    group_of = _grouping(group_by)
    if not complete:
        found = [future for future in found if not future.done()]
    if not multi:
        group_of = _all_in_one
    if notebook is None:
        notebook = _in_a_kernel()
    if notebook and _has_ipywidgets():
        from storied.diagnostics.widget import ProgressWidget

        return ProgressWidget(found, ProgressGroups((f.key for f in found), group_of))
    if found and found[0].client.asynchronous:
        raise TypeError(
            "progress() in a terminal blocks until the work is done, which an asynchronous "
            "client's loop cannot do: await the futures instead (storied.wait)"
        )
    TextProgress(found, ProgressGroups((f.key for f in found), group_of), file).run()
    return None


class TextProgress:
    """tqdm bars in a terminal, one per group, redrawn as keys finish."""

    def __init__(self, found: list[Future], groups: ProgressGroups, file: TextIO | None) -> None:
        self.found = found
        self.clients = {future.client for future in found}
        self.groups = groups
        self.file = file if file is not None else sys.stdout
        self._finished: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()

    def run(self) -> None:
        from tqdm import tqdm

        bars = {
            group: tqdm(
                total=total,
                desc=group,
                file=self.file,
                position=index,
                leave=True,
                unit="task",
                dynamic_ncols=False,
                ncols=100,
            )
            for index, (group, total) in enumerate(self.groups.total.items())
        }
        try:
            watch(self.found, lambda key, failed: self._finished.put((key, failed)))
            while self.groups.remaining:
                try:
                    key, failed = self._finished.get(timeout=REDRAW_INTERVAL)
                except queue.Empty:
                    for bar in bars.values():
                        bar.refresh()
                    if any(client.status in ("closing", "closed") for client in self.clients):
                        return  # what is pending will not finish on a closed client
                    continue
                group = self.groups.finish(key, failed)
                if group is None:
                    continue
                bar = bars[group]
                if failed:
                    bar.set_postfix_str(f"erred {self.groups.erred[group]}", refresh=False)
                bar.update(1)
        finally:
            for bar in bars.values():
                bar.close()


def watch(found: list[Future], on_finished: Callable[[str, bool], None]) -> None:
    """Call ``on_finished(key, failed)`` once per future when it is done (on the client's loop,
    at once for those done already). Nothing is asked of the scheduler."""
    by_client: dict[Any, list[Future]] = {}
    for future in found:
        by_client.setdefault(future.client, []).append(future)
    for client, theirs in by_client.items():

        def register(theirs: list[Future] = theirs) -> None:
            for future in theirs:
                state = future._state

                def done(key: str = future.key, state: Any = state) -> None:
                    on_finished(key, state.status != "finished")

                state.on_done(done)

        if client.asynchronous:
            register()
        else:
            client._loop.call_soon_threadsafe(register)


def _tracked_futures(arguments: tuple[Any, ...]) -> list[Future]:
    found: list[Future] = []
    for argument in arguments:
        theirs = futures_of(argument)
        if not theirs:
            if callable(getattr(argument, "__dask_graph__", None)):
                raise TypeError(
                    f"progress() follows work on the cluster, and this {type(argument).__name__} "
                    "has none: persist it first (x = client.persist(x); progress(x))"
                )
            if not isinstance(argument, (list, tuple, set, frozenset, dict)):
                raise TypeError(
                    "progress() takes futures, persisted dask collections, or lists/dicts of "
                    f"them, not {type(argument).__name__}"
                )
        found.extend(theirs)
    return found


def _grouping(group_by: str | Callable[[str], str]) -> Callable[[str], str]:
    if group_by == "prefix":
        return key_prefix
    if callable(group_by):
        return group_by
    raise ValueError(
        f"group_by must be 'prefix' or a callable from key to group name, not {group_by!r} "
        "(storied has no spans)"
    )


def _all_in_one(key: str) -> str:
    return "Completed"


def _in_a_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()  # type: ignore[attr-defined]
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True
