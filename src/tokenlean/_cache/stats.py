"""Cache statistics: hits, misses and lookup latency per layer, cheap to record."""

from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenlean._cache.acceptance import AcceptanceSnapshot

__all__ = ["CacheStats", "LayerStats", "StatsRecorder"]


@dataclass(frozen=True)
class LayerStats:
    """Figures of one cache layer (``exact``, ``semantic`` or ``retrieval``).

    A lookup counts in every layer it reached: a hit in the layer that served it, a miss in
    each layer it went past (a semantic lookup first misses the exact layer). The metrics
    collector counts the same way, so the two always agree; latency is that of the lookups a
    layer decided.
    """

    hits: int
    misses: int
    lookup_ms_p50: float
    lookup_ms_p95: float

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache: per-layer figures, overall hit rate, and what the store holds.

    ``explored`` counts would-be semantic hits sent to the model to be judged, ``judged`` the
    verdicts that became evidence, ``feedback`` the verdicts users gave, and ``acceptance`` what
    each error-bounded route has learned (by route name, ``""`` for the default policy).
    ``indexes`` counts the semantic partitions loaded in this process by vector-index kind
    (``flat``, ``ivf`` while an interim index serves, or ``hnsw``). ``store_errors`` counts the
    store faults the cache went on without (each lookup that met one is also counted as a miss;
    each write that met one was dropped). ``embedding_errors`` counts the embedder failures
    (it raised, or gave vectors of the wrong shape, NaN or infinity) the cache went on without
    the same way: a semantic lookup that met one is a miss, a semantic write is dropped.
    """

    layers: dict[str, LayerStats]
    bypassed: int
    writes: int
    rejected_by_verifier: int
    entries: int
    bytes: int
    explored: int = 0
    judged: int = 0
    feedback: int = 0
    acceptance: dict[str, AcceptanceSnapshot] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)
    store_errors: int = 0
    total_lookups: int | None = None
    embedding_errors: int = 0

    @property
    def hits(self) -> int:
        return sum(layer.hits for layer in self.layers.values())

    @property
    def lookups(self) -> int:
        """Lookups, each counted once (whatever the layers it reached)."""
        if self.total_lookups is not None:
            return self.total_lookups
        return sum(layer.lookups for layer in self.layers.values())

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def _percentiles(values: list[float], *qs: float) -> list[float]:
    """Interpolated percentiles (inclusive method) of ``values``, one quantile pass for all."""
    if not values:
        return [0.0 for _ in qs]
    if len(values) == 1:
        return [values[0] for _ in qs]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[round(q * 100) - 1] for q in qs]


class StatsRecorder:
    """Thread-safe counters and a bounded window of recent lookup latencies per layer."""

    def __init__(self, window: int = 4096) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, int] = {}
        self._misses: dict[str, int] = {}
        self._latency: dict[str, deque[float]] = {}
        self._window = window
        self.bypassed = 0
        self.writes = 0
        self.rejected = 0
        self.explored = 0
        self.judged = 0
        self.feedback = 0
        self.store_errors = 0
        self.embedding_errors = 0
        self._lookups = 0

    def lookup(self, layer: str, hit: bool, ms: float) -> None:
        """One lookup, decided by ``layer`` (after :meth:`passed` for each layer before it)."""
        with self._lock:
            self._lookups += 1
            counts = self._hits if hit else self._misses
            counts[layer] = counts.get(layer, 0) + 1
            self._latency.setdefault(layer, deque(maxlen=self._window)).append(ms)

    def passed(self, layer: str) -> None:
        """A lookup went past ``layer`` (a miss there) on its way to the next one."""
        with self._lock:
            self._misses[layer] = self._misses.get(layer, 0) + 1

    def count(
        self,
        *,
        bypassed: int = 0,
        writes: int = 0,
        rejected: int = 0,
        explored: int = 0,
        judged: int = 0,
        feedback: int = 0,
        store_errors: int = 0,
        embedding_errors: int = 0,
    ) -> None:
        with self._lock:
            self.bypassed += bypassed
            self.writes += writes
            self.rejected += rejected
            self.explored += explored
            self.judged += judged
            self.feedback += feedback
            self.store_errors += store_errors
            self.embedding_errors += embedding_errors

    def snapshot(
        self,
        entries: int,
        size: int,
        acceptance: dict[str, AcceptanceSnapshot] | None = None,
        indexes: dict[str, int] | None = None,
    ) -> CacheStats:
        with self._lock:
            layers = {
                name: LayerStats(
                    self._hits.get(name, 0),
                    self._misses.get(name, 0),
                    *_percentiles(list(self._latency.get(name, ())), 0.50, 0.95),
                )
                for name in sorted(set(self._hits) | set(self._misses))
            }
            return CacheStats(
                layers, self.bypassed, self.writes, self.rejected, entries, size,
                self.explored, self.judged, self.feedback, dict(acceptance or {}),
                dict(indexes or {}), self.store_errors, self._lookups, self.embedding_errors,
            )  # fmt: skip
