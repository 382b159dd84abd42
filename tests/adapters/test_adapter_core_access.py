"""Adapters reach the core only through its public API, at run time too: no adapter reads a
``_private`` attribute of another object (``store._redis``) or fetches one by name
(``getattr(store, "_redis")``), which the import rules of tests/test_architecture.py cannot see."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADAPTER_ROOTS = (REPO / "integrations" / "langchain", REPO / "integrations" / "llamaindex")
_BY_NAME = ("getattr", "hasattr", "setattr", "delattr")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _offenders(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        # obj._name, where obj is a plain name other than the adapter's own self / cls (a
        # call's result, such as the host framework's own objects, is not a core object)
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id not in ("self", "cls")
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _BY_NAME
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_adapters_read_no_private_attribute_of_another_object() -> None:
    """No adapter module reads ``other._name`` or ``getattr(other, "_name")``."""
    files = [
        path
        for root in ADAPTER_ROOTS
        for path in sorted(root.rglob("*.py"))
        if "tests" not in path.relative_to(root).parts
    ]
    assert files
    offenders = [line for path in files for line in _offenders(path)]
    assert offenders == [], "adapters reading private attributes:\n" + "\n".join(offenders)
