"""Architecture rules: a framework-free core, lazy heavy imports, a documented public API."""

from __future__ import annotations

import ast
import graphlib
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenlean

SRC = Path(tokenlean.__file__).resolve().parent
REPO = SRC.parent.parent
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
    """Every module of the core is private: the public surface is the package itself and three
    public packages (the test helpers, the benchmarks' ports and the CLI), whose own modules are
    private too."""
    public_modules = {
        path.name
        for path in SRC.glob("*.py")
        if not path.name.startswith("_") and path.name != "__init__.py"
    }
    assert public_modules == set()
    public_packages = {
        path.name
        for path in SRC.iterdir()
        if path.is_dir() and (path / "__init__.py").exists() and not path.name.startswith("_")
    }
    assert public_packages == {"bench", "cli", "testing"}
    for package in public_packages:
        inner = {p.name for p in (SRC / package).glob("*.py") if p.name != "__init__.py"}
        assert all(name.startswith("_") for name in inner), (package, inner)


# --- Wings and the direction of their imports ---------------------------------------------------
#
# The core is split into wings: one package per concern under src/tokenlean, plus a few shared
# top-level modules that every wing may use. A wing imports only the wings its row below lists
# (its own modules are always allowed), so the layering stays acyclic. docs/architecture.md draws
# the same table.

SHARED_MODULES = frozenset(
    {
        "_errors",
        "_config",
        "_canonical",
        "_embeddings",
        "_stats",
        "_sqlite_file",
        "_input",
        "_extras",
        "_redis_client",
    }
)
LIBRARY = frozenset(
    {"shared", "_tokens", "_metrics", "_prompt", "_cache", "_batching", "_routing",
     "_retrieval", "_memory", "_audit"}
)  # fmt: skip
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {
    "shared": frozenset(),
    "_tokens": frozenset({"shared"}),
    "_metrics": frozenset({"shared", "_tokens"}),
    "_prompt": frozenset({"shared", "_tokens"}),
    "_cache": frozenset({"shared", "_metrics"}),
    "_batching": frozenset({"shared", "_metrics"}),
    "_routing": frozenset({"shared", "_metrics", "_tokens"}),
    "_retrieval": frozenset({"shared", "_cache", "_metrics", "_tokens"}),
    "_memory": frozenset({"shared", "_retrieval", "_metrics", "_tokens"}),
    "_audit": frozenset({"shared", "_cache", "_prompt", "_metrics", "_tokens"}),
    # The public API and the test helpers re-export the library, never the applications.
    "__init__": LIBRARY,
    "testing": LIBRARY,
    # The applications: the benchmarks, and the command line over everything.
    "bench": LIBRARY | {"__init__", "testing"},
    "cli": LIBRARY | {"__init__", "testing", "bench"},
}


@dataclass(frozen=True)
class _Import:
    """One imported module (``name`` is None) or one name imported from a module."""

    path: Path
    line: int
    module: tuple[str, ...]  # the importing module, e.g. ("tokenlean", "_cache", "completion")
    target: tuple[str, ...]  # the imported module, resolved
    name: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def statement(self) -> str:
        target = ".".join(self.target)
        return f"import {target}" if self.name is None else f"from {target} import {self.name}"


def _module_name(path: Path, root: Path) -> tuple[str, ...]:
    parts = path.relative_to(root).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _core_module_exists(parts: tuple[str, ...]) -> bool:
    if parts[:1] != ("tokenlean",):
        return False
    base = SRC.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _walk_imports(path: Path, root: Path) -> Iterator[_Import]:
    """Every import of a file, at any depth (functions, TYPE_CHECKING blocks), relative ones
    resolved; ``from package import submodule`` counts as importing the submodule."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _Import(path, node.lineno, module, tuple(alias.name.split(".")), None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                base += tuple(node.module.split(".")) if node.module else ()
            else:
                base = tuple((node.module or "").split("."))
            for alias in node.names:
                if _core_module_exists((*base, alias.name)):
                    yield _Import(path, node.lineno, module, (*base, alias.name), None)
                else:
                    yield _Import(path, node.lineno, module, base, alias.name)


def _core_imports() -> list[_Import]:
    return [
        imp
        for path in sorted(SRC.rglob("*.py"))
        for imp in _walk_imports(path, SRC.parent)
        if imp.target[:1] == ("tokenlean",)
    ]


def _wing(module: tuple[str, ...]) -> str:
    """The wing of a core module: its package under src/tokenlean, ``shared`` for the shared
    top-level modules, ``__init__`` for the package itself."""
    if len(module) == 1:
        return "__init__"
    head = module[1]
    return "shared" if head in SHARED_MODULES else head


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_core_module_belongs_to_a_wing_of_the_table() -> None:
    """A new top-level module or package is placed in the wing table before it is used."""
    wings = {_wing(_module_name(path, SRC.parent)) for path in SRC.rglob("*.py")}
    unknown = sorted(wings - ALLOWED_IMPORTS.keys())
    assert unknown == [], f"add {unknown} to ALLOWED_IMPORTS (and docs/architecture.md)"


def test_the_wing_table_is_acyclic() -> None:
    """The allowed directions form a layering: no two wings may import each other."""
    graph = {wing: allowed - {wing} for wing, allowed in ALLOWED_IMPORTS.items()}
    assert set().union(*graph.values()) <= graph.keys()
    graphlib.TopologicalSorter(graph).static_order()  # raises CycleError on a cycle


def test_wings_import_only_the_wings_below_them() -> None:
    """Each import between wings follows ALLOWED_IMPORTS (module-level and lazy imports)."""
    offenders = []
    for imp in _core_imports():
        source, target = _wing(imp.module), _wing(imp.target)
        if source != target and target not in ALLOWED_IMPORTS.get(source, frozenset()):
            offenders.append(f"{imp.where}: {source} -> {target} ({imp.statement})")
    assert offenders == [], "imports against the wing direction:\n" + "\n".join(offenders)


def test_no_private_name_crosses_a_wing() -> None:
    """A ``_private`` name is imported only inside its own wing (a shared module keeps its own)."""

    def unit(module: tuple[str, ...]) -> str:
        wing = _wing(module)
        return ".".join(module[:2]) if wing == "shared" else wing

    offenders = [
        f"{imp.where}: {imp.statement}"
        for imp in _core_imports()
        if imp.name is not None and _is_private(imp.name) and unit(imp.module) != unit(imp.target)
    ]
    assert offenders == [], "private names imported across wings:\n" + "\n".join(offenders)


ADAPTER_ROOTS = (
    REPO / "integrations" / "langchain",
    REPO / "integrations" / "llamaindex",
)


def _adapter_files() -> list[tuple[Path, Path]]:
    return [
        (path, root)
        for root in ADAPTER_ROOTS
        for path in sorted(root.rglob("*.py"))
        if "tests" not in path.relative_to(root).parts
    ]


def test_adapters_use_only_public_names_and_the_public_api() -> None:
    """An adapter converts types over tokenlean's public API: it never imports a private module
    of the core, nor a ``_private`` name from any module (its own package's included)."""
    assert _adapter_files()
    offenders = []
    for path, root in _adapter_files():
        for imp in _walk_imports(path, root):
            private_module = imp.target[:1] == ("tokenlean",) and any(
                _is_private(part) for part in imp.target
            )
            if private_module or (imp.name is not None and _is_private(imp.name)):
                offenders.append(f"{imp.where}: {imp.statement}")
    assert offenders == [], "adapters importing private names:\n" + "\n".join(offenders)


# --- Async twins --------------------------------------------------------------------------------

_OURS = re.compile(r"^(tokenlean|langchain_tokenlean|llama_index\.\w+\.tokenlean)(\.|$)")


def _public_classes() -> list[type]:
    """The classes of the core's public API and of the adapters' public API (those installed)."""
    names = ["tokenlean", "langchain_tokenlean"]
    llama = REPO / "integrations" / "llamaindex" / "llama_index"
    names += [f"llama_index.{init.parent.parent.name}.tokenlean"
              for init in sorted(llama.glob("*/tokenlean/__init__.py"))]  # fmt: skip
    modules = [importlib.import_module(name) for name in names if _installed(name)]
    return [
        obj
        for module in modules
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name))
    ]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _own_method(cls: type, name: str) -> Callable[..., Any] | None:
    """``cls.name`` if our code defines it (not a framework base class) and it is a method."""
    owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
    if owner is None or not _OURS.match(owner.__module__):
        return None
    method = getattr(cls, name)
    return method if inspect.isfunction(method) or inspect.ismethod(method) else None


def _sync_spelling(annotation: str) -> str:
    """An annotation with its async wrappers undone: ``Awaitable[X]`` is ``X`` and
    ``AsyncIterator`` is ``Iterator`` (an async twin takes async callbacks)."""
    while (start := annotation.find("Awaitable[")) != -1:
        open_at, depth = start + len("Awaitable"), 0
        for end in range(open_at, len(annotation)):
            depth += {"[": 1, "]": -1}.get(annotation[end], 0)
            if depth == 0:
                break
        annotation = annotation[:start] + annotation[open_at + 1 : end] + annotation[end + 1 :]
    return re.sub(r"Async(?=Gen|Iterator|Iterable|Generator)", "", annotation)


def _parameters(method: Callable[..., Any]) -> list[tuple[str, str, Any, str]]:
    def spelled(annotation: Any) -> str:
        text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        return _sync_spelling(text)

    return [
        (p.name, p.kind.name, p.default, spelled(p.annotation))
        for p in inspect.signature(method).parameters.values()
    ]


def _where(method: Callable[..., Any]) -> str:
    code = inspect.unwrap(method).__code__
    path = Path(code.co_filename).resolve()
    return f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{code.co_firstlineno}"


def test_every_async_twin_takes_the_parameters_of_its_sync_method() -> None:
    """``aX`` and ``X`` of a public class accept the same parameters: names, kinds, defaults and
    annotations (an async twin's callbacks may return awaitables)."""
    mismatches, pairs = [], 0
    for cls in _public_classes():
        for name in sorted(dir(cls)):
            if not name.startswith("a") or not hasattr(cls, name[1:]):
                continue
            twin, sync = _own_method(cls, name), _own_method(cls, name[1:])
            if twin is None or sync is None:
                continue
            pairs += 1
            if _parameters(twin) != _parameters(sync):
                mismatches.append(
                    f"{cls.__qualname__}.{name}{inspect.signature(twin)} at {_where(twin)} vs "
                    f"{name[1:]}{inspect.signature(sync)} at {_where(sync)}"
                )
    assert pairs > 0
    assert mismatches == [], "async twins that differ:\n" + "\n".join(mismatches)
