"""Log levels as people write them: one parser for the config, the CLI, the ledger and the API.

``--level``, ``?level=``, ``Ledger.logs(level=...)`` and the config's ``logging`` section read a
level with ``parse_level``, so they accept the same forms (a name in any case, or a number) and
refuse the same mistakes with the same words. It lives outside ``storied.record`` because the
config, which ``storied.record`` imports, reads levels too.
"""

from __future__ import annotations

import logging

#: What a level may be, as an error tells it.
ACCEPTED = (
    ", ".join(name.lower() for name in logging.getLevelNamesMapping() if name != "WARN")
    + " (any case), or a number"
)


class BadLevel(ValueError):
    """A log level that is neither a known level name nor a number."""

    accepted = ACCEPTED


def parse_level(level: str | int) -> int:
    """The number of ``level``: an int as it is, a string of digits as its number, a name
    (``"warning"``, ``"WARNING"``) as ``logging`` knows it; ``BadLevel`` otherwise."""
    if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
        return level
    if isinstance(level, str):
        text = level.strip()
        if text.isdigit():
            return int(text)
        number = logging.getLevelNamesMapping().get(text.upper())
        if number is not None:
            return number
    raise BadLevel(f"unknown log level {level!r}; accepted: {ACCEPTED}")
