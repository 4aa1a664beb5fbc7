"""Dask graphs and collections on storied.

A graph is converted once, at the client, into the tasks storied's engine already runs: each
dask task becomes one storied task whose arguments refer to its dependencies, so collections
get the same scheduling, stories and events as ``submit``. Needs ``dask`` (``pip install
"storied[dask]"``); nothing else in storied imports it.
"""

from storied.graph.keys import stringify

__all__ = ["stringify"]
