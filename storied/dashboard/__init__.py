"""The dashboard: one web UI over the record, live from a scheduler or offline from ledgers.

``history`` is the one query interface every page reads (answered by a live scheduler or by a
ledger file), ``views`` turns it into what the pages show, ``api`` serves that as JSON under
``/api/v1``, ``pages`` the HTML, ``metrics`` Prometheus' ``/metrics``, and ``app`` puts them
behind one aiohttp server with its access rules. See docs/dashboard.md.
"""

from storied.dashboard.app import Dashboard, parse_dashboard_address

__all__ = ["Dashboard", "parse_dashboard_address"]
