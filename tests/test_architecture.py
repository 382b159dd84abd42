"""Architecture rules: a framework-free core, lazy heavy imports, a documented public API."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tokenlean

SRC = Path(tokenlean.__file__).resolve().parent
FRAMEWORKS = ("langchain", "langchain_core", "llama_index")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_core_never_imports_langchain_or_llamaindex() -> None:
    """No module under src/tokenlean imports a framework, even lazily."""
    offenders = {
        str(path.relative_to(SRC)): sorted(n for n in _imports(path) if n.startswith(FRAMEWORKS))
        for path in SRC.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_tokenlean_loads_no_framework_and_no_heavy_library() -> None:
    """`import tokenlean` (and its CLI) pulls in neither frameworks nor torch/faiss."""
    code = (
        "import sys, tokenlean, tokenlean.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'llama_index', 'torch', 'faiss', "
        "'sentence_transformers', 'transformers')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_exactly_what_the_docs_list() -> None:
    """`tokenlean.__all__` equals the names docs/api.md documents, and each one exists."""
    api_doc = (SRC.parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^- `([A-Za-z_][A-Za-z0-9_]*)`", api_doc, flags=re.MULTILINE))
    assert set(tokenlean.__all__) == documented
    assert len(tokenlean.__all__) == len(set(tokenlean.__all__))
    for name in tokenlean.__all__:
        assert hasattr(tokenlean, name), name


def test_implementation_modules_are_private() -> None:
    """Every module of the core is private, except the public test helpers (and the CLI)."""
    public = {
        path.name
        for path in SRC.glob("*.py")
        if not path.name.startswith("_") and path.name != "__init__.py"
    }
    assert public == {"testing.py"}
