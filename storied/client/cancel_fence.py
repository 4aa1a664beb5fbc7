"""Which keys the client has cancelled without the scheduler having answered yet.

``client.cancel(f)`` cancels ``f`` at once, locally, and sends the scheduler a ``cancel``
stamped with a stimulus id; the scheduler answers ``cancelled-keys`` with that stimulus id
once it has let the tasks go. Until that answer arrives, whatever the scheduler says about
those keys (``key-in-memory``, ``task-erred``, ``cancelled-keys`` ...) is about the cancelled
submission, not about a new one made right after (``cancel(f)`` then ``submit`` of the same
call: the same key): the scheduler reads the client's messages in order, so it answers the
cancel before it hears of the resubmission. The fence makes the client ignore those stale
messages instead of letting them cancel, finish or fail the new future. (dask.distributed
2026.8 has this race: its echo of the cancel cancels the resubmitted future.)
"""

from __future__ import annotations

import itertools
import time

from storied.client.future import births


class CancelFence:
    """Cancels in flight, by stimulus id, and how many of them cover each key (used on the
    client's event loop only)."""

    __slots__ = ("_by_stimulus", "_numbers", "pending")

    def __init__(self) -> None:
        #: stimulus id -> (the keys cancelled, the birth number of the cancel)
        self._by_stimulus: dict[str, tuple[list[str], int]] = {}
        self._numbers = itertools.count()
        #: key -> number of unanswered cancels covering it; messages about these keys are stale
        self.pending: dict[str, int] = {}

    def raise_for(self, keys: list[str]) -> str:
        """The client is sending the scheduler ``cancel(keys)``: the stimulus id to send it
        under (unique, so that two cancels in one clock tick are answered apart)."""
        stimulus_id = f"client-cancels-{time.time()}-{next(self._numbers)}"
        self._by_stimulus[stimulus_id] = (keys, next(births))
        pending = self.pending
        for key in keys:
            pending[key] = pending.get(key, 0) + 1
        return stimulus_id

    def lift(self, stimulus_id: str) -> int | None:
        """The scheduler answered the cancel sent under ``stimulus_id``: the birth number of
        that cancel, as the dependents it cancelled too are those of the futures made before
        it (a resubmission made since survives). None for a cancel the client did not send
        on this link (another client's ``force``, or one sent before a reconnect)."""
        keys, born = self._by_stimulus.pop(stimulus_id, ((), None))
        pending = self.pending
        for key in keys:
            count = pending[key] - 1
            if count:
                pending[key] = count
            else:
                del pending[key]
        return born

    def clear(self) -> None:
        """A new link to the scheduler: no answer to a cancel sent on the old one will come."""
        self._by_stimulus.clear()
        self.pending.clear()
