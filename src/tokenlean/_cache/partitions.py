"""The semantic layer's vector indexes, one per partition, kept in step with the store.

A partition (tenant, policy, model settings and fixed part of the request, hashed) has its own
:class:`~tokenlean._cache.vector_index.VectorIndex`, loaded from the store's semantic entries
on first use. Every store change that removes entries (eviction on a write, deletion) removes
them from the indexes in the same critical section, so a concurrent re-store is not lost.

A store shared by several replicas (:class:`RedisStore`) also offers a change feed
(:class:`ChangeFeed`): before a semantic lookup, at most every :data:`FEED_INTERVAL_S`, the
partitions apply the other replicas' puts and removals from it; when the feed was trimmed past
their position, they rebuild from a scan, aside, while the old indexes keep answering. Stores
without a feed (memory, SQLite) are read once.

Lookups never write to the store: an expired entry a lookup meets leaves the index at once and
is deleted from the store by the next write. Lookups never wait for an index rebuild either:
rebuilds (the switch to HNSW, compaction) run after the write that made them due has released
every lock here, and build aside while the old index keeps answering (see
:meth:`VectorIndex.maintain`). A partition loaded past the HNSW threshold (a replica joining, or
rebuilding from a scan) is built in a background thread: its exact index answers at once, an
interim inverted file index within seconds, HNSW when it is built.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.vector_index import VectorIndex
from tokenlean._errors import StoreError

__all__ = ["EXPIRED_LIMIT", "FEED_INTERVAL_S", "ChangeFeed", "FeedChange", "Partitions"]

EXPIRED_LIMIT = 4096
"""Expired entries met by lookups that wait for the next write to be deleted, at most (the
oldest are left to :meth:`~tokenlean.CompletionCache.purge_expired` and eviction)."""

FEED_INTERVAL_S = 0.01
"""Least seconds between two reads of the change feed by one cache (a read that finds nothing
costs one round trip, about 0.1 ms on loopback: see docs/benchmarks.md)."""

_OWN_LIMIT = 65_536  # own puts whose feed record is awaited, at most (see Partitions._own)


class FeedChange(NamedTuple):
    """One change of a semantic entry, from a store's change feed.

    Attributes:
        op: ``"put"``, ``"deleted"``, ``"evicted"`` or ``"expired"``.
        namespace: the entry's partition.
        key: the entry's key.
        vector: a put's vector (float16 bytes) as stored when the feed was read; None when the
            entry is gone again (a later change says so) or for a removal.
        expires_at: a put's expiry (None: never, or a removal).
    """

    op: str
    namespace: str
    key: str
    vector: bytes | None
    expires_at: float | None


@runtime_checkable
class ChangeFeed(Protocol):
    """An optional ability of a store shared by several processes: the changes of its semantic
    entries, in order, so each process keeps its vector indexes in step."""

    def changes_since(self, position: str | None) -> tuple[list[FeedChange], str] | None:
        """The changes after ``position`` and the new position; None when the changes after
        ``position`` are no longer kept (the reader rebuilds from a scan). ``position`` None
        asks for the current end: no changes, and the position to read from next."""
        ...


class Partitions:
    """Per-partition vector indexes over one store, and the store writes that affect them.

    Args:
        store: the cache's store.
        clock: time source for expiry.
        hnsw_threshold: entries per partition past which an index becomes HNSW.
        feed: the store's change feed, when other processes share the store (None: the store
            is read once, on first use).
        feed_interval_s: least seconds between two reads of the feed.
        interim_min: least entries at which a partition's switch to HNSW goes through an
            interim index (see :class:`VectorIndex`; None: never).
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        clock: Callable[[], float],
        hnsw_threshold: int,
        feed: ChangeFeed | None = None,
        feed_interval_s: float = FEED_INTERVAL_S,
        interim_min: int | None = 10_000,
    ) -> None:
        self.store, self.clock, self.hnsw_threshold = store, clock, hnsw_threshold
        self.feed, self.feed_interval_s, self.interim_min = feed, feed_interval_s, interim_min
        self.lock = threading.RLock()  # writes and the indexes' membership; never a rebuild
        self._indexes: dict[str, VectorIndex] | None = None
        self._position: str | None = None  # in the feed: changes up to here are applied
        self._next_read = 0.0  # monotonic time of the next feed read
        self._reading = threading.Lock()  # one feed read (or rebuild) at a time
        # Own puts whose feed record is still to come: that record is then no news (re-adding
        # a vector would leave a tombstone in the index). A removal read meanwhile clears it.
        self._own: dict[tuple[str, str], None] = {}
        self.rebuilds = 0  # rebuilds from a scan after the feed was trimmed past our position
        self._due: set[str] = set()  # partitions whose index has a rebuild due
        self._expired: dict[tuple[str, str], float] = {}  # met by lookups: delete on next write
        self._background: threading.Thread | None = None  # see maintain_in_background

    def _new_index(self, dimension: int) -> VectorIndex:
        return VectorIndex(
            dimension,
            hnsw_threshold=self.hnsw_threshold,
            interim_min=self.interim_min,
            maintain_inline=False,
        )

    def _loaded(self) -> dict[str, VectorIndex]:
        """The indexes, loaded from the store on first use (as exact indexes: any switch to
        HNSW is left to :meth:`maintain`). Call with ``lock`` held."""
        if self._indexes is None:
            self._indexes, self._position = self._build()
            self._own.clear()
        return self._indexes

    def _build(self) -> tuple[dict[str, VectorIndex], str | None]:
        """New indexes from a scan of the store, and the feed position they are current at
        (taken before the scan: the changes after it are applied next, again if need be)."""
        position = None if self.feed is None else self._feed_end()
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
            if index.maintenance_due:
                with self.lock:
                    self._due.add(namespace)
        return indexes, position

    def _feed_end(self) -> str:
        assert self.feed is not None
        result = self.feed.changes_since(None)
        return "0-0" if result is None else result[1]

    def index(self, namespace: str) -> VectorIndex | None:
        """The partition's index (None: the partition has no entries), after applying the
        feed's news when a read is due.

        Raises:
            StoreError: the store (or its feed) failed.
        """
        indexes = self._indexes  # once loaded, a lookup takes no lock here
        if indexes is None:
            with self.lock:
                indexes = self._loaded()
                due = bool(self._due)
            if due:  # a large partition loads exact; its HNSW is built aside, not by a write
                self.maintain_in_background()
        elif self.feed is not None and time.monotonic() >= self._next_read:
            self.follow()
            indexes = self._indexes or indexes
        return indexes.get(namespace)

    def follow(self) -> None:
        """Apply the feed's changes since the last read; rebuild from a scan, aside, when the
        feed was trimmed past our position. Returns at once when another thread is reading.

        Raises:
            StoreError: the store (or its feed) failed.
        """
        if self.feed is None or not self._reading.acquire(blocking=False):
            return
        try:
            self._next_read = time.monotonic() + self.feed_interval_s
            for _ in range(2):  # a rebuild, then the changes made during it
                with self.lock:
                    if self._indexes is None:
                        self._loaded()
                        break
                    result = self.feed.changes_since(self._position)
                    if result is not None:
                        changes, self._position = result
                        self._apply(changes, self._indexes)
                        break
                indexes, position = self._build()  # trimmed: the old indexes answer meanwhile
                with self.lock:
                    self._indexes, self._position = indexes, position
                    self._own.clear()
                    self.rebuilds += 1
        finally:
            self._reading.release()
        with self.lock:
            due = bool(self._due)
        if due:  # another replica's changes (or a rebuild) made a rebuild due: run it aside
            self.maintain_in_background()

    def _apply(self, changes: Sequence[FeedChange], indexes: dict[str, VectorIndex]) -> None:
        """Apply feed changes, in order, to ``indexes``. Call with ``lock`` held."""
        now = self.clock()
        for change in changes:
            address = (change.namespace, change.key)
            index = indexes.get(change.namespace)
            if change.op != "put":
                self._own.pop(address, None)
                if index is not None and index.remove(change.key):
                    self._mark(change.namespace, index)
                continue
            if address in self._own:  # our own put, indexed when it was made
                del self._own[address]
                continue
            expired = change.expires_at is not None and now >= change.expires_at
            if change.vector is None or expired:
                continue
            vector = np.frombuffer(change.vector, dtype=np.float16).astype(np.float32)
            if index is None:
                index = indexes[change.namespace] = self._new_index(len(vector))
            elif len(vector) != index.dimension:
                continue  # a damaged vector: the entry can still answer exactly
            index.add(change.key, vector)
            self._mark(change.namespace, index)

    def loaded(self) -> dict[str, VectorIndex]:
        """The indexes loaded in this process, by partition (a copy: loads nothing)."""
        with self.lock:
            return dict(self._indexes or {})

    def kinds(self) -> dict[str, int]:
        """Partitions loaded in this process, by index kind (``flat``; ``ivf``, the interim
        index of a large partition while its HNSW index is built; ``hnsw``)."""
        out: dict[str, int] = {}
        for index in self.loaded().values():
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

    def maintain_in_background(self) -> threading.Thread:
        """:meth:`maintain` in a daemon thread (the one already running, if any): a replica
        that loaded a partition past the HNSW threshold, rebuilt it from a scan or grew it
        through the feed gets its HNSW index without waiting for a write of its own."""
        with self.lock:
            if self._background is None or not self._background.is_alive():
                self._background = threading.Thread(
                    target=self.maintain, name="tokenlean-index-build", daemon=True
                )
                self._background.start()
            return self._background

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
                if self.feed is not None:
                    self._own[(entry.namespace, entry.key)] = None
                    while len(self._own) > _OWN_LIMIT:
                        del self._own[next(iter(self._own))]
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
