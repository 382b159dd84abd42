"""The cache store port: what every backend (memory, SQLite, yours) implements.

A store holds :class:`StoredEntry` rows addressed by ``(namespace, key)``, both already hashed by
the caches, so no store ever sees a raw prompt in an address. It enforces its own limits (entry
count and bytes, least recently used first) and reports what it evicted, so that in-memory
indexes built over it can follow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["CacheStore", "Selector", "StoredEntry"]


@dataclass(frozen=True)
class StoredEntry:
    """One cached item.

    Attributes:
        namespace: hashed partition (tenant, layer and, for semantic entries, model and
            parameters); invalidation by tenant removes a namespace's entries.
        key: hashed key within the namespace.
        payload: the serialized cached value (a response, a list of document ids…).
        created_at: clock time of the write.
        expires_at: clock time after which the entry is gone (None: never).
        layer: which cache wrote it: ``"exact"``, ``"semantic"`` or ``"retrieval"``.
        tenant: hashed tenant id, for invalidation across a tenant's namespaces.
        tags: user tags for invalidation.
        plan_version: version of the prompt plan or index the entry depends on.
        vector: embedding for semantic entries (float16 bytes).
        features: verifier features for semantic entries (JSON), never the raw text.
    """

    namespace: str
    key: str
    payload: bytes
    created_at: float
    expires_at: float | None = None
    layer: str = "exact"
    tenant: str = ""
    tags: tuple[str, ...] = ()
    plan_version: str | None = None
    vector: bytes | None = None
    features: str | None = None

    @property
    def size(self) -> int:
        """Bytes this entry accounts for: payload, vector and features."""
        return len(self.payload) + len(self.vector or b"") + len((self.features or "").encode())

    def expired(self, now: float) -> bool:
        """True when the entry's time to live has passed at ``now``."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True)
class Selector:
    """Which entries an invalidation removes: all fields given must match (None: any)."""

    namespace: str | None = None
    key: str | None = None
    tenant: str | None = None
    layer: str | None = None
    tag: str | None = None
    plan_version: str | None = None
    expired_at: float | None = field(default=None)

    def matches(self, entry: StoredEntry) -> bool:
        """True when ``entry`` is selected."""
        return (
            (self.namespace is None or entry.namespace == self.namespace)
            and (self.key is None or entry.key == self.key)
            and (self.tenant is None or entry.tenant == self.tenant)
            and (self.layer is None or entry.layer == self.layer)
            and (self.tag is None or self.tag in entry.tags)
            and (self.plan_version is None or entry.plan_version == self.plan_version)
            and (self.expired_at is None or entry.expired(self.expired_at))
        )


@runtime_checkable
class CacheStore(Protocol):
    """Storage behind tokenlean's caches. Implementations must be thread-safe.

    ``secret`` is the store's key-derivation secret: random, created with the store and kept
    with it (persistent stores persist it), so hashed keys stay valid across restarts and mean
    nothing outside the store.

    Failures should raise a :class:`~tokenlean.StoreError` subclass naming the store (its file or
    server), with the backend's exception as the cause; the caches wrap anything else in a
    :class:`~tokenlean.StoreBackendError`, and go on without the store (a lookup misses, a write is
    dropped). :meth:`get` should not need write access: record its recency without writing to
    storage on the lookup path (:class:`SQLiteStore` keeps it in memory until the next
    :meth:`put`).
    """

    @property
    def secret(self) -> bytes:
        """The store's key-derivation secret (at least 16 random bytes)."""
        ...

    def get(self, namespace: str, key: str) -> StoredEntry | None:
        """The entry at ``(namespace, key)``, marked as recently used; None if absent."""
        ...

    def put(self, entry: StoredEntry) -> list[tuple[str, str]]:
        """Insert or replace an entry; return the ``(namespace, key)`` pairs evicted for room."""
        ...

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        """Remove the selected entries; return their ``(namespace, key)`` pairs."""
        ...

    def scan(self, layer: str | None = None) -> Iterator[StoredEntry]:
        """Every entry (of one layer), in no particular order."""
        ...

    def usage(self) -> tuple[int, int]:
        """``(entries, bytes)`` currently held."""
        ...

    def close(self) -> None:
        """Release resources; the store is unusable afterwards."""
        ...
