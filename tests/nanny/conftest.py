"""The nanny tests start CLI processes as the CLI tests do, with the same clean-up."""

from engine.test_cli import started

__all__ = ["started"]
