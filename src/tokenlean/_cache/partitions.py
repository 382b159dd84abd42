"""The semantic layer's vector indexes, one per partition, kept in step with the store.

A partition (tenant, policy, model settings and fixed part of the request, hashed) has its own
:class:`~tokenlean._cache.vector_index.VectorIndex`, rebuilt from the store's semantic entries
on first use. Every store change that removes entries (eviction on a write, deletion, expiry)
removes them from the indexes in the same critical section, so a concurrent re-store is not
lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.vector_index import VectorIndex

__all__ = ["Partitions"]


class Partitions:
    """Per-partition vector indexes over one store, and the store writes that affect them.

    Args:
        store: the cache's store.
        clock: time source for expiry.
        hnsw_threshold: entries per partition past which an index becomes HNSW.
    """

    def __init__(
        self, store: CacheStore, *, clock: Callable[[], float], hnsw_threshold: int
    ) -> None:
        self.store, self.clock, self.hnsw_threshold = store, clock, hnsw_threshold
        self.lock = threading.RLock()
        self._indexes: dict[str, VectorIndex] | None = None

    def _loaded(self) -> dict[str, VectorIndex]:
        """The indexes, rebuilt from the store on first use. Call with ``lock`` held."""
        if self._indexes is None:
            indexes: dict[str, VectorIndex] = {}
            now = self.clock()
            for entry in self.store.scan(layer="semantic"):
                if entry.vector is None or entry.expired(now):
                    continue
                vector = np.frombuffer(entry.vector, dtype=np.float16).astype(np.float32)
                index = indexes.get(entry.namespace)
                if index is None:
                    index = indexes[entry.namespace] = VectorIndex(
                        len(vector), hnsw_threshold=self.hnsw_threshold
                    )
                index.add(entry.key, vector)
            self._indexes = indexes
        return self._indexes

    def index(self, namespace: str) -> VectorIndex | None:
        """The partition's index (None: the partition has no entries)."""
        with self.lock:
            return self._loaded().get(namespace)

    def kinds(self) -> dict[str, int]:
        """Partitions loaded in this process, by index kind (``flat``, ``hnsw``)."""
        with self.lock:
            indexes = list((self._indexes or {}).values())
        out: dict[str, int] = {}
        for index in indexes:
            out[index.kind] = out.get(index.kind, 0) + 1
        return dict(sorted(out.items()))

    def _forget(self, addresses: Sequence[tuple[str, str]]) -> None:
        if not addresses or self._indexes is None:
            return
        for namespace, key in addresses:
            index = self._indexes.get(namespace)
            if index is not None:
                index.remove(key)

    def put(self, entry: StoredEntry, vector: npt.NDArray[np.float32] | None = None) -> None:
        """Write ``entry``; with ``vector``, also index it in its partition."""
        with self.lock:
            indexes = self._loaded() if vector is not None else None
            evicted = self.store.put(entry)
            if indexes is not None and vector is not None:
                index = indexes.get(entry.namespace)
                if index is None:
                    index = indexes[entry.namespace] = VectorIndex(
                        len(vector), hnsw_threshold=self.hnsw_threshold
                    )
                index.add(entry.key, vector)
            self._forget(evicted)

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        """Remove the matching entries from the store and the indexes; return their addresses."""
        with self.lock:
            removed = self.store.delete(selector)
            self._forget(removed)
            return removed

    def clear(self) -> int:
        """Remove every entry; return how many."""
        with self.lock:
            removed = self.store.delete(Selector())
            self._indexes = {} if self._indexes is not None else None
        return len(removed)

    def live(self, namespace: str, key: str) -> StoredEntry | None:
        """The entry, unless absent or expired (an expired one is removed)."""
        entry = self.store.get(namespace, key)
        if entry is not None and entry.expired(now := self.clock()):
            # Only an entry still expired is removed: a fresh one stored meanwhile stays.
            self.delete(Selector(namespace=namespace, key=key, expired_at=now))
            return None
        return entry

    def candidate(self, namespace: str, key: str, index: VectorIndex) -> StoredEntry | None:
        """:meth:`live` for a key the index returned; one the store no longer has (evicted by
        another process) leaves the index too, unless re-stored meanwhile."""
        candidate = self.live(namespace, key)
        if candidate is None:
            with self.lock:
                if self.store.get(namespace, key) is None:
                    index.remove(key)
        return candidate
