"""The corpus: every snippet gives on storied what it gives on dask.distributed."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pytest

from storied import Client

from .snippets import SNIPPETS, Snippet


def run(snippet: Snippet, client: Any, module: str) -> Any:
    code = snippet.code.replace("dask.distributed", module)
    namespace: dict[str, Any] = {"__name__": f"corpus_{snippet.name}", "client": client}
    exec(compile(code, f"<{snippet.name} on {module}>", "exec"), namespace)
    return namespace["result"]


def run_on_dask(snippet: Snippet, dask_client: Any) -> Any:
    """As its own default client: storied's, open meanwhile, is the default for dask too."""
    with dask.config.set(scheduler=dask_client), dask_client.as_current():
        return run(snippet, dask_client, "dask.distributed")


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.name for s in SNIPPETS])
def test_snippet_gives_what_dask_gives(snippet: Snippet, client: Client, dask_client: Any) -> None:
    theirs = run_on_dask(snippet, dask_client)
    ours = run(snippet, client, "storied")
    if isinstance(theirs, (np.ndarray, np.generic)):
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert ours == theirs


def test_the_corpus_only_changes_the_import() -> None:
    for snippet in SNIPPETS:
        assert "storied" not in snippet.code, snippet.name
