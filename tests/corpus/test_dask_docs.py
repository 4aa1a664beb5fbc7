"""The corpus: every snippet gives on storied what it gives on dask.distributed."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pytest

from storied import Client

from . import snippets, snippets_dask_examples, snippets_distributed_docs
from .snippets import Snippet

SNIPPETS = snippets.SNIPPETS + snippets_distributed_docs.SNIPPETS + snippets_dask_examples.SNIPPETS


def run(snippet: Snippet, client: Any, module: str) -> Any:
    code = snippet.code.replace("dask.distributed", module)
    namespace: dict[str, Any] = {"__name__": f"corpus_{snippet.name}", "client": client}
    exec(compile(code, f"<{snippet.name} on {module}>", "exec"), namespace)
    return namespace["result"]


def run_on_dask(snippet: Snippet, dask_client: Any) -> Any:
    """As its own default client: storied's, open meanwhile, is the default for dask too."""
    with dask.config.set(scheduler=dask_client), dask_client.as_current():
        return run(snippet, dask_client, "dask.distributed")


def as_param(snippet: Snippet) -> Any:
    """A snippet where storied differs is expected to fail there, strictly: a fix shows up."""
    marks = [pytest.mark.xfail(strict=True, reason=snippet.differs)] if snippet.differs else []
    return pytest.param(snippet, id=snippet.name, marks=marks)


@pytest.mark.parametrize("snippet", [as_param(s) for s in SNIPPETS])
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


def test_snippet_names_are_unique() -> None:
    names = [snippet.name for snippet in SNIPPETS]
    assert len(names) == len(set(names))
