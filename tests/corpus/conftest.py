"""The corpus runs each snippet on dask.distributed too (``dask_client``, tests/conftest.py)."""

import pytest

pytest.importorskip("distributed")
