"""The task prefix of a key, as Dask's ``key_split`` gives it: what progress bars group by.

Shared by the record (a run's summary stores each task's prefix) and the dashboard."""

from __future__ import annotations

import re
from functools import lru_cache

_TUPLE_KEY = re.compile(r"""^\(\s*['"]([^'"]*)['"]""")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")


def key_prefix(key: str) -> str:
    """The name shared by a key's siblings, as Dask's ``key_split``: ``inc-1f2e...`` is
    ``inc``, ``('sum-aggregate-0a1b...', 3)`` is ``sum-aggregate``: the first word, then the
    words made of letters only, up to a token (a word with a digit, or eight hex letters).

    Most keys end in a token with a digit (``name-<hash>``): the scan stops there, so the
    prefix is the one of the part before it, which a map's tasks share and is kept."""
    if not key.startswith("("):
        head, dash, token = key.rpartition("-")
        if dash and head and not token.isalpha():
            return _split_words(head)
    return _split_words(key)


@lru_cache(maxsize=4096)
def _split_words(key: str) -> str:
    match = _TUPLE_KEY.match(key)
    words = (match.group(1) if match else key).split("-")
    kept = [words[0]]
    for word in words[1:]:
        if not word.isalpha() or _HEX8.match(word):
            break
        kept.append(word)
    return "-".join(kept)
