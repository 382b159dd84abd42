"""The semantic layer's vector indexes, one per partition, kept in step with the store.

A partition (tenant, policy, model settings and fixed part of the request, hashed) has its own
:class:`~tokenlean._cache.vector_index.VectorIndex`, loaded from the store's semantic entries
on first use. Every store change that removes entries (eviction on a write, deletion) removes
them from the indexes in the same critical section, so a concurrent re-store is not lost.

Lookups never write to the store: an expired entry a lookup meets leaves the index at once and
is deleted from the store by the next write. Lookups never wait for an index rebuild either:
rebuilds (the switch to HNSW, compaction) run after the write that made them due has released
every lock here, and build aside while the old index keeps answering (see
:meth:`VectorIndex.maintain`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.vector_index import VectorIndex
from tokenlean._errors import StoreError

__all__ = ["EXPIRED_LIMIT", "Partitions"]

EXPIRED_LIMIT = 4096
"""Expired entries met by lookups that wait for the next write to be deleted, at most (the
oldest are left to :meth:`~tokenlean.CompletionCache.purge_expired` and eviction)."""


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
        self.lock = threading.RLock()  # writes and the indexes' membership; never a rebuild
        self._indexes: dict[str, VectorIndex] | None = None
        self._due: set[str] = set()  # partitions whose index has a rebuild due
        self._expired: dict[tuple[str, str], float] = {}  # met by lookups: delete on next write

    def _new_index(self, dimension: int) -> VectorIndex:
        return VectorIndex(dimension, hnsw_threshold=self.hnsw_threshold, maintain_inline=False)

    def _loaded(self) -> dict[str, VectorIndex]:
        """The indexes, loaded from the store on first use (as exact indexes: any switch to
        HNSW is left to :meth:`maintain`). Call with ``lock`` held."""
        if self._indexes is None:
            grouped: dict[str, tuple[list[str], list[npt.NDArray[np.float32]]]] = {}
            now = self.clock()
            for entry in self.store.scan(layer="semantic"):
                if entry.vector is None or entry.expired(now):
                    continue
                vector = np.frombuffer(entry.vector, dtype=np.float16).astype(np.float32)
                keys, vectors = grouped.setdefault(entry.namespace, ([], []))
                if vectors and len(vector) != len(vectors[0]):
                    continue  # a damaged vector: the entry can still answer exactly
                keys.append(entry.key)
                vectors.append(vector)
            indexes: dict[str, VectorIndex] = {}
            for namespace, (keys, vectors) in grouped.items():
                index = indexes[namespace] = self._new_index(len(vectors[0]))
                index.add_many(keys, np.stack(vectors))
                self._mark(namespace, index)
            self._indexes = indexes
        return self._indexes

    def index(self, namespace: str) -> VectorIndex | None:
        """The partition's index (None: the partition has no entries)."""
        indexes = self._indexes  # once loaded, a lookup takes no lock here
        if indexes is None:
            with self.lock:
                indexes = self._loaded()
        return indexes.get(namespace)

    def kinds(self) -> dict[str, int]:
        """Partitions loaded in this process, by index kind (``flat``, ``hnsw``)."""
        with self.lock:
            indexes = list((self._indexes or {}).values())
        out: dict[str, int] = {}
        for index in indexes:
            out[index.kind] = out.get(index.kind, 0) + 1
        return dict(sorted(out.items()))

    # ------------------------------------------------------------------ upkeep

    def _mark(self, namespace: str, index: VectorIndex) -> None:
        """Remember the partition when its index has a rebuild due. Call with ``lock`` held."""
        if index.maintenance_due:
            self._due.add(namespace)

    def _forget(self, addresses: Sequence[tuple[str, str]]) -> None:
        if not addresses or self._indexes is None:
            return
        for namespace, key in addresses:
            index = self._indexes.get(namespace)
            if index is not None and index.remove(key):
                self._mark(namespace, index)

    def _delete_expired(self) -> None:
        """Delete the expired entries lookups met (still expired only), best effort: on a store
        fault they wait for the next write. Call with ``lock`` held, before a write."""
        for (namespace, key), now in list(self._expired.items()):
            try:
                removed = self.store.delete(Selector(namespace=namespace, key=key, expired_at=now))
            except StoreError:
                return
            self._expired.pop((namespace, key), None)
            self._forget(removed)

    def maintain(self) -> None:
        """Run the index rebuilds that are due, holding no lock of ours: the calling write
        spends the build time, while lookups go on against the old indexes."""
        with self.lock:
            indexes = self._indexes or {}
            due = [(ns, indexes[ns]) for ns in self._due if ns in indexes]
            self._due.clear()
        for namespace, index in due:
            index.maintain()
            if index.maintenance_due:  # being rebuilt by another write, or due again already
                with self.lock:
                    self._due.add(namespace)

    # ------------------------------------------------------------------ writes

    def put(self, entry: StoredEntry, vector: npt.NDArray[np.float32] | None = None) -> None:
        """Write ``entry``; with ``vector``, also index it in its partition. Then run the index
        rebuilds that are due.

        Raises:
            StoreError: the store failed; nothing was written or indexed.
        """
        with self.lock:
            self._delete_expired()
            indexes = self._loaded() if vector is not None else None
            evicted = self.store.put(entry)
            if indexes is not None and vector is not None:
                index = indexes.get(entry.namespace)
                if index is None:
                    index = indexes[entry.namespace] = self._new_index(len(vector))
                index.add(entry.key, vector)
                self._mark(entry.namespace, index)
            self._forget(evicted)
        self.maintain()

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        """Remove the matching entries from the store and the indexes; return their addresses.

        Raises:
            StoreError: the store failed.
        """
        with self.lock:
            self._delete_expired()
            removed = self.store.delete(selector)
            self._forget(removed)
        self.maintain()
        return removed

    def clear(self) -> int:
        """Remove every entry; return how many.

        Raises:
            StoreError: the store failed.
        """
        with self.lock:
            removed = self.store.delete(Selector())
            self._indexes = {} if self._indexes is not None else None
            self._due.clear()
            self._expired.clear()
        return len(removed)

    # ------------------------------------------------------------------ reads

    def _expire(self, namespace: str, key: str, now: float) -> None:
        """An entry a lookup found expired: out of the index now, out of the store with the
        next write. A fresh copy stored meanwhile stays in both."""
        with self.lock:
            current = self.store.get(namespace, key)
            if current is not None and not current.expired(now):
                return
            self._expired[(namespace, key)] = now
            while len(self._expired) > EXPIRED_LIMIT:
                del self._expired[next(iter(self._expired))]
            self._forget([(namespace, key)])

    def live(self, namespace: str, key: str) -> StoredEntry | None:
        """The entry, unless absent or expired. Reads only.

        Raises:
            StoreError: the store failed.
        """
        entry = self.store.get(namespace, key)
        if entry is not None and entry.expired(now := self.clock()):
            self._expire(namespace, key, now)
            return None
        return entry

    def candidate(self, namespace: str, key: str, index: VectorIndex) -> StoredEntry | None:
        """:meth:`live` for a key the index returned; one the store no longer has (evicted by
        another process) leaves the index too, unless re-stored meanwhile."""
        candidate = self.live(namespace, key)
        if candidate is None:
            with self.lock:
                if self.store.get(namespace, key) is None and index.remove(key):
                    self._mark(namespace, index)
        return candidate
