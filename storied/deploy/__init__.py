"""Ways to start a cluster."""

from storied.deploy.local import LocalCluster

__all__ = ["LocalCluster"]
