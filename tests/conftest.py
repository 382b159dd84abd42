"""Shared fixtures. The suite runs offline: no model hub, no tiktoken download."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenlean._tokens import counting, encodings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _clean_tokenlean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see tokenlean's defaults, not the developer's TOKENLEAN_* variables."""
    for key in list(os.environ):
        if key.startswith("TOKENLEAN_"):
            monkeypatch.delenv(key)


@pytest.fixture
def fresh_tokenizers() -> Iterator[None]:
    """Forget loaded encodings, cached counters and one-time log lines, before and after."""

    def reset() -> None:
        encodings._encodings.clear()
        encodings._unavailable.clear()
        counting._default_counters.clear()
        encodings._logged.clear()

    reset()
    yield
    reset()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
