"""The three distributions as they would be uploaded: wheels, license, metadata, dependencies."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import tokenlean
from tokenlean._extras import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = {
    "tokenlean": ROOT,
    "langchain-tokenlean": ROOT / "integrations" / "langchain",
    "llama-index-tokenlean": ROOT / "integrations" / "llamaindex",
}
ADAPTERS = ("langchain-tokenlean", "llama-index-tokenlean")
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.Path]:
    """Each project built into a wheel, offline, as ``pip wheel`` builds it for an upload."""
    out = tmp_path_factory.mktemp("wheels")
    built = {}
    for name, project in PROJECTS.items():
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "-w", str(out), str(project)],
            check=True, capture_output=True,
        )  # fmt: skip
        (wheel,) = out.glob(f"{name.replace('-', '_')}-*.whl")
        built[name] = zipfile.Path(wheel)
    return built


def _dist_info(wheel: zipfile.Path) -> zipfile.Path:
    (info,) = (entry for entry in wheel.iterdir() if entry.name.endswith(".dist-info"))
    return info


def _metadata(wheel: zipfile.Path) -> Message:
    return email.message_from_string((_dist_info(wheel) / "METADATA").read_text())


def _requirements(metadata: Message, extra: str | None = None) -> dict[str, Requirement]:
    """The requirements of the base install (``extra=None``) or of one extra, by name."""
    found = {}
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            applies = extra is None
        else:
            applies = extra is not None and requirement.marker.evaluate({"extra": extra})
        if applies:
            found[requirement.name] = requirement
    return found


def test_the_license_is_one_mit_text_beside_each_project() -> None:
    """Each project carries the same MIT license, the one at the repository root."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the tokenlean authors" in text
    for project in PROJECTS.values():
        assert (project / "LICENSE").read_text(encoding="utf-8") == text, project


@pytest.mark.parametrize("name", PROJECTS)
def test_each_wheel_ships_the_license_and_says_so(
    wheels: dict[str, zipfile.Path], name: str
) -> None:
    """Every wheel holds the license file and declares MIT, its authors and classifiers."""
    info = _dist_info(wheels[name])
    assert (info / "licenses" / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    metadata = _metadata(wheels[name])
    assert metadata["Name"] == name
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Author"] == "the tokenlean authors"
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # the expression says it


def test_the_core_wheel_holds_the_typed_package_and_its_command(
    wheels: dict[str, zipfile.Path],
) -> None:
    """The core wheel has py.typed, the ``tokenlean`` command, and no tests."""
    wheel = wheels["tokenlean"]
    assert (wheel / "tokenlean" / "py.typed").exists()
    assert [entry.name for entry in wheel.iterdir()] == ["tokenlean", _dist_info(wheel).name]
    assert "tokenlean = tokenlean.cli:main" in (_dist_info(wheel) / "entry_points.txt").read_text()
    assert _metadata(wheel)["Version"] == tokenlean.__version__


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_adapter_bounds_the_core_to_its_minor_version(
    wheels: dict[str, zipfile.Path], name: str
) -> None:
    """An adapter accepts this core version and refuses the next minor (0.x breaks at minors)."""
    core = Version(tokenlean.__version__)
    specifier = _requirements(_metadata(wheels[name]))["tokenlean"].specifier
    assert specifier.contains(core)
    assert not specifier.contains(Version(f"{core.major}.{core.minor + 1}.0"))


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_adapter_offers_the_core_extras(wheels: dict[str, zipfile.Path], name: str) -> None:
    """``pip install '<adapter>[semantic]'`` installs ``tokenlean[semantic]``, and so on."""
    metadata = _metadata(wheels[name])
    for extra in [*EXTRAS, "all"]:
        core = _requirements(metadata, extra)["tokenlean"]
        assert core.extras == {extra}, (name, extra)


def test_the_langchain_adapter_needs_only_langchain_core_without_its_agents_extra(
    wheels: dict[str, zipfile.Path],
) -> None:
    """``langchain-tokenlean`` requires langchain-core; langchain and LangGraph come with
    ``[agents]`` (and ``[all]``)."""
    metadata = _metadata(wheels["langchain-tokenlean"])
    assert set(_requirements(metadata)) == {"tokenlean", "langchain-core"}
    for extra in ("agents", "all"):
        assert {"langchain", "langgraph"} <= set(_requirements(metadata, extra)), extra


@pytest.mark.parametrize("name", ADAPTERS)
def test_each_adapter_readme_links_nothing_relative(name: str) -> None:
    """An adapter's README is its PyPI page, where a relative link leads nowhere."""
    readme = (PROJECTS[name] / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"\]\((?!https://)[^)]*\)", readme) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ADAPTERS)
def test_each_adapter_readme_runs(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python examples of an adapter's README run in order, offline, as a reader would."""
    monkeypatch.chdir(tmp_path)  # they create cache.db
    namespace = {"__name__": "__readme__"}
    readme = (PROJECTS[name] / "README.md").read_text(encoding="utf-8")
    blocks = PYTHON_BLOCK.findall(readme)
    assert blocks
    for index, code in enumerate(blocks):
        exec(compile(code, f"{name} README.md#{index}", "exec"), namespace)
