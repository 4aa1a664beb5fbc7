"""What can go wrong with a ledger file, as exceptions that name the file and the cause."""

from __future__ import annotations


class LedgerError(RuntimeError):
    """The file is not a ledger this version of storied can read or write."""


class LedgerLockedError(LedgerError):
    """Another process is writing this ledger file."""


class LedgerCorruptError(LedgerError):
    """SQLite found the file damaged: ``storied ledger recover PATH`` saves what can be read."""
