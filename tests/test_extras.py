"""The extras table, and the check a constructor makes before it needs an extra."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean._extras import EXTRAS, missing_extras, require

ROOT = Path(__file__).resolve().parent.parent


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str, parent_missing: bool = False) -> None:
    """Make ``importlib.util.find_spec`` report ``modules`` as not installed."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if name in modules:
            if parent_missing:
                raise ModuleNotFoundError(f"No module named {name.split('.')[0]!r}")
            return None
        return real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_table_lists_each_extra_of_pyproject_with_its_own_packages() -> None:
    """Every capability extra of pyproject.toml is in the table with exactly its own packages."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        extra: {
            _normalized(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])
            for requirement in requirements
            if not requirement.startswith("tokenlean[")
        }
        for extra, requirements in project["optional-dependencies"].items()
        if extra not in {"all", "dev"}
    }
    table = {
        extra: {_normalized(lib.distribution) for lib in libraries}
        for extra, libraries in EXTRAS.items()
    }
    assert table == declared


def test_each_module_of_the_table_is_installed_by_its_distribution() -> None:
    """The module checked for each package is one that package really installs."""
    owners = importlib.metadata.packages_distributions()
    for libraries in EXTRAS.values():
        for lib in libraries:
            top = lib.module.split(".")[0]
            assert _normalized(lib.distribution) in {_normalized(d) for d in owners[top]}, lib


def test_nothing_is_missing_where_every_extra_is_installed() -> None:
    """In the development environment (every extra installed) no extra is reported missing."""
    assert missing_extras(*EXTRAS) == []
    require(*EXTRAS, what="Everything")


def test_every_missing_extra_is_named_in_one_error_with_one_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without FAISS and sentence-transformers, one error names both extras and both packages."""
    _hide(monkeypatch, "faiss", "sentence_transformers")
    assert missing_extras("semantic", "embeddings", "hf") == ["semantic", "embeddings"]
    with pytest.raises(tl.MissingDependencyError) as caught:
        require("semantic", "embeddings", "hf", what="A semantic CompletionCache")
    message = str(caught.value)
    assert message.startswith("A semantic CompletionCache needs the packages")
    assert "'faiss-cpu'" in message
    assert "'sentence-transformers'" in message
    assert message.endswith("pip install 'tokenlean[semantic,embeddings]'")
    assert caught.value.extra == "semantic,embeddings"
    assert caught.value.package == "faiss-cpu, sentence-transformers"
    assert isinstance(caught.value, ImportError)


def test_one_missing_package_keeps_the_errors_own_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """A single missing package is reported exactly as MissingDependencyError words it."""
    _hide(monkeypatch, "prometheus_client")
    with pytest.raises(tl.MissingDependencyError) as caught:
        require("prometheus", what="Prometheus export")
    expected = tl.MissingDependencyError("prometheus-client", "prometheus", "Prometheus export")
    assert str(caught.value) == str(expected)
    assert caught.value.name == "prometheus-client"


def test_a_dotted_module_whose_parent_package_is_absent_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``opentelemetry.metrics`` counts as missing when its parent package cannot be found."""
    _hide(monkeypatch, "opentelemetry.metrics", parent_missing=True)
    assert missing_extras("otel") == ["otel"]


def test_an_extra_asked_twice_is_named_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated features are checked and reported once, in the order first asked."""
    _hide(monkeypatch, "bm25s", "tokenizers")
    assert missing_extras("hf", "retrieval", "hf") == ["hf", "retrieval"]


def test_an_unknown_extra_is_a_configuration_error() -> None:
    """A feature that is not an extra of tokenlean is refused, listing the real ones."""
    with pytest.raises(tl.ConfigurationError, match="unknown extra 'faiss'"):
        missing_extras("faiss")


def test_checking_imports_none_of_the_libraries() -> None:
    """The check finds modules without importing them: torch and FAISS stay unloaded."""
    code = (
        "import sys\n"
        "from tokenlean._extras import EXTRAS, missing_extras\n"
        "missing_extras(*EXTRAS)\n"
        "heavy = {'torch', 'faiss', 'sentence_transformers', 'sklearn', 'scipy', 'bm25s',\n"
        "         'Stemmer', 'prometheus_client', 'tokenizers', 'opentelemetry.metrics'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
