"""A FAISS vector index per cache partition, chosen by size.

Up to ``hnsw_threshold`` vectors a partition uses exact search (``IndexFlatIP``); past it the
partition is rebuilt once as HNSW (``IndexHNSWFlat``, inner product), which keeps a lookup well
under a millisecond at 100,000 entries. Removals are tombstones, filtered out of results and
compacted away when they pass a quarter of the index (a bitmap selector keeps them out of
searches meanwhile). Converting a partition to HNSW rebuilds it once, holding the index's lock
(about 4.5 s at 20,000 vectors on two cores).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._errors import ConfigurationError, MissingDependencyError

__all__ = ["VectorIndex", "load_faiss"]


def load_faiss() -> Any:
    """Import faiss, or say which extra provides it."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError("faiss-cpu", "semantic", "The semantic cache") from exc
    return faiss


class VectorIndex:
    """Unit vectors addressed by string keys, searched by inner product (cosine). Thread-safe.

    Args:
        dimension: vector length.
        hnsw_threshold: size past which the index becomes HNSW.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (recall against speed).
    """

    def __init__(
        self,
        dimension: int,
        *,
        hnsw_threshold: int = 20_000,
        hnsw_m: int = 32,
        ef_search: int = 64,
    ) -> None:
        if dimension < 1:
            raise ConfigurationError(f"dimension must be >= 1, got {dimension}")
        self.faiss = load_faiss()
        self.dimension = dimension
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self._lock = threading.Lock()
        self._index: Any = self.faiss.IndexFlatIP(dimension)
        self._keys: list[str | None] = []  # position -> key (None: removed)
        self._positions: dict[str, int] = {}
        # position -> not removed; a buffer grown by doubling (its first len(_keys) cells count),
        # so a long-running cache does not copy it on every add
        self._live = np.zeros(64, dtype=bool)

    @property
    def kind(self) -> str:
        """``"flat"`` or ``"hnsw"``."""
        return "hnsw" if isinstance(self._index, self.faiss.IndexHNSWFlat) else "flat"

    def __len__(self) -> int:
        with self._lock:
            return len(self._positions)

    def _compact_if_sparse(self) -> None:
        """Rebuild without the removed positions once they are many (more than 64 and a
        quarter of all positions)."""
        removed = len(self._keys) - len(self._positions)
        if removed > max(64, len(self._keys) // 4):
            self._rebuild(hnsw=self.kind == "hnsw")

    def _new_hnsw(self) -> Any:
        index = self.faiss.IndexHNSWFlat(
            self.dimension, self.hnsw_m, self.faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efSearch = self.ef_search
        index.hnsw.efConstruction = 64
        return index

    def _rebuild(self, hnsw: bool) -> None:
        live: list[tuple[str, int]] = [
            (key, pos) for pos, key in enumerate(self._keys) if key is not None
        ]
        vectors = np.empty((len(live), self.dimension), dtype=np.float32)
        for row, (_, pos) in enumerate(live):
            vectors[row] = self._index.reconstruct(pos)
        index = self._new_hnsw() if hnsw else self.faiss.IndexFlatIP(self.dimension)
        if len(live):
            index.add(vectors)
        self._index = index
        self._keys = [key for key, _ in live]
        self._positions = {key: row for row, (key, _) in enumerate(live)}
        self._live = np.ones(max(64, 2 * len(self._keys)), dtype=bool)

    def add(self, key: str, vector: npt.NDArray[np.float32]) -> None:
        """Add (or replace) the vector of ``key``."""
        row = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dimension)
        with self._lock:
            old = self._positions.pop(key, None)
            if old is not None:
                self._keys[old] = None
                self._live[old] = False
            self._index.add(row)
            self._positions[key] = len(self._keys)
            self._keys.append(key)
            if len(self._keys) > len(self._live):
                grown = np.zeros(2 * len(self._live), dtype=bool)
                grown[: len(self._live)] = self._live
                self._live = grown
            self._live[len(self._keys) - 1] = True
            if self.kind == "flat" and len(self._positions) > self.hnsw_threshold:
                self._rebuild(hnsw=True)
            else:
                self._compact_if_sparse()

    def remove(self, key: str) -> bool:
        """Forget ``key``; True if it was present."""
        with self._lock:
            position = self._positions.pop(key, None)
            if position is None:
                return False
            self._keys[position] = None
            self._live[position] = False
            self._compact_if_sparse()
            return True

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest keys with their inner products, best first."""
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dimension)
        with self._lock:
            if not self._positions:
                return []
            fetch = min(len(self._positions), k)
            params = None
            if len(self._keys) > len(self._positions):
                # Removed vectors stay in the FAISS index until compaction; a bitmap of live
                # positions keeps them out of the search itself.
                bits = np.packbits(self._live[: len(self._keys)], bitorder="little")
                selector = self.faiss.IDSelectorBitmap(len(self._keys), self.faiss.swig_ptr(bits))
                if self.kind == "hnsw":
                    params = self.faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
                else:
                    params = self.faiss.SearchParameters(sel=selector)
            scores, positions = self._index.search(query, fetch, params=params)
            out: list[tuple[str, float]] = []
            for score, position in zip(scores[0], positions[0], strict=True):
                key = self._keys[position] if position >= 0 else None
                if key is not None:
                    out.append((key, float(score)))
            return out

    def bytes_used(self) -> int:
        """Approximate memory of the index: vectors plus HNSW links."""
        with self._lock:
            per_vector = 4 * self.dimension
            if self.kind == "hnsw":
                per_vector += 2 * self.hnsw_m * 4 + 8  # level-0 links, ~ upper levels
            return per_vector * len(self._keys)
