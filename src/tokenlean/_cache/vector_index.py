"""A FAISS vector index per cache partition, chosen by size, rebuilt aside.

Up to ``hnsw_threshold`` vectors a partition uses exact search (``IndexFlatIP``); past it the
partition is rebuilt once as HNSW (``IndexHNSWFlat``, inner product), which keeps a lookup well
under a millisecond at 100,000 entries. Removals are tombstones, filtered out of results (a
bitmap selector keeps them out of searches) and compacted away when they pass a quarter of the
index.

Building HNSW takes a while (25 to 31 s for 100,000 vectors of 384 dimensions on two busy
cores), and an exact search of that many takes tens of milliseconds. So a partition of at least
``interim_min`` vectors goes through an *interim* index first: an inverted file
(``IndexIVFFlat``) with about sqrt(n) lists, trained on a sample in a few seconds at most, whose
probe count is the least power of two reaching :data:`INTERIM_RECALL` recall@1 against exact
search, measured on the index's own data (:func:`calibrate`). It serves until HNSW is swapped
in. Its scores are exact inner products of the stored vectors, so the caller's threshold
and checks apply unchanged: approximation can only cost a miss (or a lesser candidate that
passes them all), never a hit the exact index would refuse.

Both rebuilds, the switch to HNSW and compaction, are *maintenance*, run by
:meth:`VectorIndex.maintain` and never inside an add, a removal or a search: it copies the live
vectors in short locked steps, builds the new index holding no lock while searches, adds and
removals go on against the old one, replays the adds and removals made meanwhile, and swaps the
new index in under the lock for a moment. A search waits at most for one copy step or the swap,
never for a build (which takes seconds: 7 to 11 s for 20,000 vectors of 384 dimensions on two
cores).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._errors import ConfigurationError, MissingDependencyError

__all__ = ["CALIBRATION_COSINE", "INTERIM_RECALL", "VectorIndex", "calibrate", "load_faiss"]

_COPY_ROWS = 8192
"""Vectors copied per locked step of a rebuild's snapshot."""
_REPLAY_UNDER_LOCK = 16
"""Changes made during a build that the swap replays under the lock, at most: longer backlogs
are replayed into the new index first, with no lock held."""
_ROUNDS = 4
"""Rebuilds one :meth:`VectorIndex.maintain` call runs at most (a rebuild can leave another due:
the interim index, then HNSW, then a compaction after removals during a long build)."""

INTERIM_RECALL = 0.99
"""Recall@1 against exact search the interim index's probe count is chosen for."""
CALIBRATION_COSINE = 0.8
"""The calibration's paraphrases are this similar to their stored vector, and the nearest
neighbours it counts at least this similar (see :func:`calibrate`): under the thresholds a
semantic cache serves at."""
_CALIBRATION_QUERIES = 128
_TRAIN_PER_LIST = 64  # training sample: vectors per inverted list
_TRAIN_ITERATIONS = 8  # k-means rounds

_Change = tuple[str, "npt.NDArray[np.float32] | None"]  # (key, row added) or (key, None): removed


def load_faiss() -> Any:
    """Import faiss, or say which extra provides it."""
    try:
        import faiss
    except ImportError as exc:
        raise MissingDependencyError("faiss-cpu", "semantic", "The semantic cache") from exc
    return faiss


def _kind(faiss: Any, index: Any) -> str:
    if isinstance(index, faiss.IndexHNSWFlat):
        return "hnsw"
    return "ivf" if isinstance(index, faiss.IndexIVFFlat) else "flat"


def calibrate(
    faiss: Any, index: Any, vectors: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[int, float]:
    """The least power-of-two probe count (up to every list) at which the inverted file
    ``index`` over ``vectors`` reaches :data:`INTERIM_RECALL` recall@1 against exact search, and
    the recall@1 measured at it.

    The queries come from a sample of the stored vectors: each moved to cosine
    :data:`CALIBRATION_COSINE` in a random direction (a paraphrase), to find the best match;
    and each as it is, to find its nearest *other* stored vector, counted when that one is at
    least :data:`CALIBRATION_COSINE` similar (a neighbour a cache might serve; in data without
    near neighbours, an IVF index needs every list to find the nearest one, which matters to
    no lookup). A query is found when the index's score equals the exact one (equal vectors
    are ties, not misses).
    """
    picks = rng.choice(len(vectors), min(len(vectors), _CALIBRATION_QUERIES), replace=False)
    base = vectors[picks]
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base  # orthogonal to a unit base
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    moved = CALIBRATION_COSINE * base + np.sqrt(1 - CALIBRATION_COSINE**2) * noise
    queries = np.ascontiguousarray(np.concatenate([moved, base]), dtype=np.float32)
    best = np.full((len(queries), 2), -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), 65_536):  # exact top two scores, a block at a time
        block = np.concatenate([best, queries @ vectors[start : start + 65_536].T], axis=1)
        best = -np.sort(-np.partition(block, block.shape[1] - 2, axis=1)[:, -2:], axis=1)
    count = len(base)
    counted = np.concatenate([np.ones(count, dtype=bool), best[count:, 1] >= CALIBRATION_COSINE])
    nprobe = 1
    while True:
        scores, _ = index.search(queries, 2, params=faiss.SearchParametersIVF(nprobe=nprobe))
        moved_found = scores[:count, 0] >= best[:count, 0] - 1e-4
        other_found = scores[count:, 1] >= best[count:, 1] - 1e-4
        found = np.concatenate([moved_found, other_found])
        recall = float(np.mean(found[counted]))
        if recall >= INTERIM_RECALL or nprobe >= index.nlist:
            return nprobe, recall
        nprobe = min(2 * nprobe, index.nlist)


def _grown(live: npt.NDArray[np.bool_], size: int) -> npt.NDArray[np.bool_]:
    """``live`` with room for ``size`` cells (doubling), its cells kept."""
    if size <= len(live):
        return live
    grown = np.zeros(max(2 * len(live), size), dtype=bool)
    grown[: len(live)] = live
    return grown


def _apply(
    changes: Sequence[_Change],
    index: Any,
    keys: list[str | None],
    positions: dict[str, int],
    live: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Apply adds and removals, in order, to an index and its bookkeeping; return the (possibly
    grown) live bitmap. The added rows go to FAISS in one call."""
    rows: list[npt.NDArray[np.float32]] = []
    for key, row in changes:
        old = positions.pop(key, None)
        if old is not None:
            keys[old] = None
            live[old] = False
        if row is not None:
            positions[key] = len(keys)
            keys.append(key)
            live = _grown(live, len(keys))
            live[len(keys) - 1] = True
            rows.append(row)
    if rows:
        index.add(np.concatenate(rows))
    return live


class VectorIndex:
    """Unit vectors addressed by string keys, searched by inner product (cosine). Thread-safe.

    Args:
        dimension: vector length.
        hnsw_threshold: size past which the index becomes HNSW.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (recall against speed).
        interim_min: least size at which the switch to HNSW goes through the interim inverted
            file index (None: never; the exact index serves until HNSW is built).
        maintain_inline: run :meth:`maintain` at the end of each :meth:`add` and :meth:`remove`
            (after its lock is released). False leaves it to the owner, which calls it when it
            holds no lock of its own (the cache's partitions do, from the write that made it
            due).
    """

    def __init__(
        self,
        dimension: int,
        *,
        hnsw_threshold: int = 20_000,
        hnsw_m: int = 32,
        ef_search: int = 64,
        interim_min: int | None = 10_000,
        maintain_inline: bool = True,
    ) -> None:
        if dimension < 1:
            raise ConfigurationError(f"dimension must be >= 1, got {dimension}")
        self.faiss = load_faiss()
        self.dimension = dimension
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.interim_min = interim_min
        self.maintain_inline = maintain_inline
        # the last interim index's probe count, lists and the recall@1 it measured (None: no
        # interim index swapped in yet)
        self.nprobe = 1
        self.interim_lists: int | None = None
        self.interim_recall: float | None = None
        self._built_recall: float | None = None  # of an interim index built, not swapped in
        self._lock = threading.Lock()  # the fields below; held for microseconds at a time
        self._maintaining = threading.Lock()  # one rebuild at a time
        self._index: Any = self.faiss.IndexFlatIP(dimension)
        self._keys: list[str | None] = []  # position -> key (None: removed)
        self._positions: dict[str, int] = {}
        # position -> not removed; a buffer grown by doubling (its first len(_keys) cells count),
        # so a long-running cache does not copy it on every add
        self._live = np.zeros(64, dtype=bool)
        self._changes: list[_Change] | None = None  # made since a rebuild's snapshot

    @property
    def kind(self) -> str:
        """``"flat"``, ``"ivf"`` (the interim index) or ``"hnsw"``: the index searches use (a
        rebuild in progress does not count until it is swapped in)."""
        return _kind(self.faiss, self._index)

    def __len__(self) -> int:
        with self._lock:
            return len(self._positions)

    # ------------------------------------------------------------------ changes

    def _row(self, vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.ascontiguousarray(vector, dtype=np.float32).reshape(-1, self.dimension)

    def add(self, key: str, vector: npt.NDArray[np.float32]) -> None:
        """Add (or replace) the vector of ``key``."""
        self.add_many([key], self._row(vector))

    def add_many(self, keys: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        """Add (or replace) several vectors in one FAISS call (a later duplicate key wins)."""
        rows = self._row(vectors)
        if len(rows) != len(keys):
            raise ConfigurationError(f"{len(keys)} keys for {len(rows)} vectors")
        if not len(keys):
            return
        changes: list[_Change] = [(key, rows[i : i + 1]) for i, key in enumerate(keys)]
        with self._lock:
            self._live = _apply(changes, self._index, self._keys, self._positions, self._live)
            if self._changes is not None:  # a rebuild is in progress: it replays these
                self._changes.extend((key, rows[i : i + 1].copy()) for i, key in enumerate(keys))
        if self.maintain_inline:
            self.maintain()

    def remove(self, key: str) -> bool:
        """Forget ``key``; True if it was present."""
        with self._lock:
            if key not in self._positions:
                return False
            self._live = _apply([(key, None)], self._index, self._keys, self._positions, self._live)
            if self._changes is not None:
                self._changes.append((key, None))
        if self.maintain_inline:
            self.maintain()
        return True

    # ------------------------------------------------------------------ maintenance

    def _due(self) -> str | None:
        """The kind of index a rebuild due now would make, or None. Call with the lock held."""
        kind, size = self.kind, len(self._positions)
        if kind == "ivf":  # interim only: HNSW is due, and compacts too
            return "hnsw"
        if kind == "flat" and size > self.hnsw_threshold:
            staged = self.interim_min is not None and size >= self.interim_min
            return "ivf" if staged else "hnsw"
        removed = len(self._keys) - len(self._positions)
        if removed > max(64, len(self._keys) // 4):  # compaction
            return kind
        return None

    @property
    def maintenance_due(self) -> bool:
        """True when a switch to HNSW or a compaction is due (see :meth:`maintain`)."""
        with self._lock:
            return self._due() is not None

    def _new_hnsw(self) -> Any:
        index = self.faiss.IndexHNSWFlat(
            self.dimension, self.hnsw_m, self.faiss.METRIC_INNER_PRODUCT
        )
        index.hnsw.efSearch = self.ef_search
        index.hnsw.efConstruction = 64
        return index

    def _build(self, vectors: npt.NDArray[np.float32], kind: str) -> Any:
        """A new FAISS index of ``kind`` holding ``vectors`` (the slow step; runs with no lock
        held)."""
        if kind == "ivf" and len(vectors):
            return self._build_interim(vectors)
        index = self._new_hnsw() if kind == "hnsw" else self.faiss.IndexFlatIP(self.dimension)
        if len(vectors):
            index.add(vectors)
        return index

    def _build_interim(self, vectors: npt.NDArray[np.float32]) -> Any:
        """The interim inverted file index over ``vectors``: about sqrt(n) lists trained on a
        sample, its probe count set for :data:`INTERIM_RECALL` (see :func:`calibrate`)."""
        faiss, rng = self.faiss, np.random.default_rng(0)
        lists = max(1, min(math.isqrt(len(vectors)), len(vectors) // 39))
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(self.dimension), self.dimension, lists, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = _TRAIN_ITERATIONS
        index.cp.max_points_per_centroid = _TRAIN_PER_LIST
        sample = min(len(vectors), lists * _TRAIN_PER_LIST)
        index.train(vectors[np.sort(rng.choice(len(vectors), sample, replace=False))])
        index.add(vectors)
        index.nprobe, self._built_recall = calibrate(faiss, index, vectors, rng)
        return index

    def _snapshot(self) -> tuple[str, list[str], npt.NDArray[np.float32]] | None:
        """The kind due and the live keys and vectors to build it from, or None when nothing is
        due; from here on changes are also logged, for the swap to replay."""
        with self._lock:
            target = self._due()
            if target is None:
                return None
            keys = list(self._keys)
            self._changes = []
        # Rows below len(keys) never change until the swap (a removal is a tombstone, a
        # replacement an append), so they are copied in short steps; the lock guards FAISS
        # against a concurrent append reallocating its storage.
        parts = [np.empty((0, self.dimension), dtype=np.float32)]
        for start in range(0, len(keys), _COPY_ROWS):
            with self._lock:
                parts.append(self._index.reconstruct_n(start, min(_COPY_ROWS, len(keys) - start)))
        vectors = np.concatenate(parts)
        rows = [position for position, key in enumerate(keys) if key is not None]
        return target, [k for k in keys if k is not None], np.ascontiguousarray(vectors[rows])

    def _swap(self, index: Any, keys: list[str]) -> None:
        """Replay the changes made since the snapshot into the new ``index`` (over ``keys``),
        then make it the one searched."""
        new_keys: list[str | None] = list(keys)
        positions = {key: row for row, key in enumerate(keys)}
        live = np.ones(max(64, 2 * len(keys)), dtype=bool)
        done = 0
        for _ in range(8):  # replay a long backlog aside, so that the swap itself is short
            with self._lock:
                assert self._changes is not None
                backlog = self._changes[done:]
            if len(backlog) <= _REPLAY_UNDER_LOCK:
                break
            live = _apply(backlog, index, new_keys, positions, live)
            done += len(backlog)
        with self._lock:
            assert self._changes is not None
            live = _apply(self._changes[done:], index, new_keys, positions, live)
            self._index, self._keys, self._positions, self._live = (
                index,
                new_keys,
                positions,
                live,
            )
            if _kind(self.faiss, index) == "ivf":
                self.nprobe, self.interim_lists = index.nprobe, index.nlist
                self.interim_recall = self._built_recall
            self._changes = None

    def maintain(self) -> bool:
        """Run the rebuild that is due, if any: switch to HNSW past the threshold, or compact
        away removed vectors. The new index is built aside while searches, adds and removals
        go on against the old one, then swapped in. Returns True when an index was swapped
        in; False at once when nothing is due or another thread is rebuilding this index."""
        if not self._maintaining.acquire(blocking=False):
            return False
        try:
            swapped = False
            for _ in range(_ROUNDS):
                plan = self._snapshot()
                if plan is None:
                    break
                target, keys, vectors = plan
                self._swap(self._build(vectors, target), keys)
                swapped = True
            return swapped
        finally:
            with self._lock:
                self._changes = None
            self._maintaining.release()

    # ------------------------------------------------------------------ reading

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
                elif self.kind == "ivf":
                    params = self.faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
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
        """Approximate memory of the index: vectors plus HNSW links, or the interim index's
        lists."""
        with self._lock:
            per_vector, fixed = 4 * self.dimension, 0
            if self.kind == "hnsw":
                per_vector += 2 * self.hnsw_m * 4 + 8  # level-0 links, ~ upper levels
            elif self.kind == "ivf":
                per_vector += 8  # its id in its list
                fixed = 4 * self.dimension * self._index.nlist  # the lists' centroids
            return per_vector * len(self._keys) + fixed
