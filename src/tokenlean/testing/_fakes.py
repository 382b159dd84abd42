"""Fakes for tests: an instant embedder and a settable clock (see :mod:`tokenlean.testing`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["FakeClock", "HashingEmbedder"]


class HashingEmbedder:
    """A fake embedder for tests: words hashed into buckets, L2-normalized.

    Texts sharing words are similar, texts sharing none are orthogonal. Deterministic across
    processes. Not a model: use it to test plumbing, never to measure quality.

    Example:
        >>> vectors = HashingEmbedder(dimension=64).embed(["refund my order", "refund order"])
        >>> vectors.shape
        (2, 64)
    """

    def __init__(self, dimension: int = 384) -> None:
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_name(self) -> str:
        """Identifies the fake (and its dimension) where an embedder's identity is recorded."""
        return f"tokenlean-hashing-embedder-{self._dimension}"

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                out[row, int.from_bytes(digest[:4], "big") % self._dimension] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out


class FakeClock:
    """A clock that only moves when told to.

    Example:
        >>> clock = FakeClock(100.0)
        >>> clock.advance(5)
        >>> clock()
        105.0
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
