"""The retrieval cache: canonical query to ranked document ids, tied to an index version.

Like the completion cache it fails open: a store fault during :meth:`RetrievalCache.get` is a
miss and during :meth:`~RetrievalCache.put` a dropped write, counted in ``stats().store_errors``
and logged (see :mod:`tokenlean._cache.store_faults`); lookups never write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tokenlean._cache.request import hash_key, hash_tenant
from tokenlean._cache.stats import CacheStats, StatsRecorder
from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.store_faults import FaultReporter, GuardedStore
from tokenlean._cache.uri import store_from
from tokenlean._canonical import canonical_json, canonicalize_text
from tokenlean._errors import ConfigurationError, InvalidInputError, StoreError

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["RetrievalCache", "canonical_query"]


def canonical_query(query: str) -> str:
    """The form two equivalent search queries share: canonical text, case-folded, one line.

    Example:
        >>> canonical_query("  Refund   Policy\\n for EU ")
        'refund policy for eu'
    """
    text = canonicalize_text(unicodedata.normalize("NFKC", query)).casefold()
    return " ".join(text.split())


class RetrievalCache:
    """Caches ranked document ids per canonical query, index version, tenant and parameters.

    A lookup under a new ``index_version`` never sees results computed against an older index;
    :meth:`invalidate_index` frees the space the old version's entries take.

    Args:
        store: where entries live (default: an unbounded :class:`MemoryStore`), or a store URI
            (``sqlite:///retrieval.db``, ``redis://host:6379/0``: see :func:`open_store`), so
            replicas that search the same index version share its results.
        ttl_s: seconds an entry lives (None: until evicted or invalidated).
        clock: time source for TTLs.
        collector: records every lookup, and every store fault the cache went on without.

    Example:
        >>> cache = RetrievalCache()
        >>> cache.put("Refund policy", ["doc-3", "doc-1"], index_version="v7")
        >>> cache.get("refund   POLICY", index_version="v7")
        ['doc-3', 'doc-1']
        >>> cache.get("refund policy", index_version="v8") is None
        True
    """

    def __init__(
        self,
        store: CacheStore | str | None = None,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.time,
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError("ttl_s must be positive or None")
        self.store_backend: CacheStore = store_from(store)
        self._store = GuardedStore(self.store_backend)
        self.ttl_s = ttl_s
        self.clock = clock
        self._stats = StatsRecorder()
        self._faults = FaultReporter(self._store.name, self._stats, collector)
        self._expired_lock = threading.Lock()
        self._expired: dict[tuple[str, str], float] = {}  # met by lookups: deleted by a put

    @property
    def _secret(self) -> bytes:
        """The store's key secret (read on first use by a Redis store: may raise StoreError)."""
        return self._store.secret

    def _address(
        self, query: str, index_version: str, tenant: str, params: Mapping[str, Any]
    ) -> tuple[str, str, str]:
        if not isinstance(query, str):
            raise InvalidInputError("a retrieval query must be a string")
        tenant_hash = hash_tenant(self._secret, tenant)
        namespace = hash_key(self._secret, "retrieval-ns", tenant_hash)
        key = hash_key(
            self._secret,
            "retrieval",
            tenant_hash,
            index_version,
            canonical_json(dict(params)),
            canonical_query(query),
        )
        return namespace, key, tenant_hash

    def get(
        self,
        query: str,
        *,
        index_version: str,
        tenant: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> list[Any] | None:
        """The cached ranking for ``query``, or None (also when the store failed). Reads only:
        an expired entry is deleted by the next :meth:`put`."""
        start = time.perf_counter()
        if not isinstance(query, str):
            raise InvalidInputError("a retrieval query must be a string")
        result: list[Any] | None = None
        try:
            namespace, key, _ = self._address(query, index_version, tenant, params or {})
            entry = self._store.get(namespace, key)
            if entry is not None and entry.expired(now := self.clock()):
                with self._expired_lock:
                    self._expired[(namespace, key)] = now
                    while len(self._expired) > 4096:
                        del self._expired[next(iter(self._expired))]
                entry = None
            if entry is not None:
                result = json.loads(entry.payload)
        except StoreError as exc:
            self._faults.report("retrieval", "the lookup is a miss", exc)
        except ValueError as exc:  # a damaged payload
            self._faults.report(
                "retrieval", "the lookup is a miss",
                StoreError(f"{self._store.name}: a cached ranking is not JSON ({exc})"),
            )  # fmt: skip
        self._stats.lookup("retrieval", result is not None, (time.perf_counter() - start) * 1000)
        if self.collector is not None:
            self.collector.record_cache("retrieval", result is not None)
        return result

    def put(
        self,
        query: str,
        ranking: Sequence[Any],
        *,
        index_version: str,
        tenant: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Cache the ranking (document ids, or ``[id, score]`` pairs) for ``query``. A store
        fault drops the write (counted in ``stats().store_errors`` and logged).

        Raises:
            NotSerializableError: the ranking has no JSON form; nothing is written.
        """
        if isinstance(ranking, str | bytes):
            raise InvalidInputError("a ranking is a list of document ids, not a single string")
        try:
            namespace, key, tenant_id = self._address(query, index_version, tenant, params or {})
        except StoreError as exc:  # the key secret could not be read
            self._faults.report("retrieval", "the write was dropped", exc)
            return
        payload = canonical_json(list(ranking)).encode("utf-8")
        now = self.clock()
        entry = StoredEntry(
            namespace,
            key,
            payload,
            now,
            now + self.ttl_s if self.ttl_s else None,
            layer="retrieval",
            tenant=tenant_id,
            plan_version=index_version,
        )
        with contextlib.suppress(StoreError):  # best effort: they wait for the next write
            self._delete_expired()
        try:
            self._store.put(entry)
        except StoreError as exc:
            self._faults.report("retrieval", "the write was dropped", exc)
            return
        self._stats.count(writes=1)

    def _delete_expired(self) -> None:
        """Delete the expired entries lookups met, if still expired."""
        with self._expired_lock:
            expired = list(self._expired.items())
        for (namespace, key), at in expired:
            self._store.delete(Selector(namespace=namespace, key=key, expired_at=at))
            with self._expired_lock:
                self._expired.pop((namespace, key), None)

    async def aget(
        self,
        query: str,
        *,
        index_version: str,
        tenant: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> list[Any] | None:
        """:meth:`get` off the event loop."""
        return await asyncio.to_thread(
            self.get, query, index_version=index_version, tenant=tenant, params=params
        )

    async def aput(
        self,
        query: str,
        ranking: Sequence[Any],
        *,
        index_version: str,
        tenant: str = "default",
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """:meth:`put` off the event loop."""
        await asyncio.to_thread(
            self.put, query, ranking, index_version=index_version, tenant=tenant, params=params
        )

    def invalidate_index(self, index_version: str) -> int:
        """Remove the entries computed against ``index_version``; return how many.

        Raises:
            StoreError: the store failed (nothing was removed).
        """
        return len(self._store.delete(Selector(layer="retrieval", plan_version=index_version)))

    def stats(self) -> CacheStats:
        """Hit rate and latency of the retrieval layer, store faults, and the store's usage
        (0 and 0 when the store cannot say)."""
        try:
            entries, size = self._store.usage()
        except StoreError as exc:
            self._faults.report("retrieval", "stats show no entries", exc)
            entries, size = 0, 0
        return self._stats.snapshot(entries, size)
