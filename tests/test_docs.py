"""Documentation that runs: README and docs/ code blocks, and every docstring example."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import tokenlean

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        for index, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8"))):
            found.append((f"{path.name}#{index}", code))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_documentation_code_blocks_run(where: str, code: str) -> None:
    """Every ```python block in the README and docs/ executes without error."""
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(tokenlean.__path__, prefix="tokenlean.")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_hold(module_name: str) -> None:
    """The >>> examples in each module's docstrings produce what they show."""
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
