"""Nannies: supervisors that restart dead workers, and the lifeline that leaves no orphans."""

from storied.nanny.supervisor import Nanny, WorkerStartError, describe_exit

__all__ = ["Nanny", "WorkerStartError", "describe_exit"]
