"""Every ``python`` block in the user docs runs, in order, against a real cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text())


@pytest.mark.parametrize("name", ["logging.md", "options.md", "coordination.md", "diagnostics.md"])
def test_doc_examples_run(name: str) -> None:
    blocks = python_blocks(name)
    assert len(blocks) > 5, f"{name} lost its examples"
    namespace: dict[str, object] = {"__name__": f"docs_{name.replace('.', '_')}"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{name} block {number}", "exec")
        exec(code, namespace)


def test_readme_examples_run() -> None:
    """Every README example but the one that needs a scheduler on another machine."""
    blocks = [b for b in BLOCK.findall((ROOT / "README.md").read_text()) if "SCHEDULER" not in b]
    assert len(blocks) >= 2, "the README lost its examples"
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md block {number}", "exec"), {"__name__": "readme"})


def test_every_config_key_is_documented() -> None:
    from storied.config import DEFAULTS

    def dotted(tree: dict[str, object], prefix: str = "") -> list[str]:
        keys = []
        for name, value in tree.items():
            path = f"{prefix}{name}"
            keys += (
                dotted(value, f"{path}.")
                if isinstance(value, dict) and name != "logging"
                else [path]
            )
        return keys

    text = (DOCS / "configuration.md").read_text()
    assert [key for key in dotted(DEFAULTS) if f"`{key}`" not in text] == []
