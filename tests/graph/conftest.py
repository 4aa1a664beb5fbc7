"""The graph tests need dask; ``dask_client`` (dask.distributed itself) is in tests/conftest.py."""

import pytest

pytest.importorskip("dask")
