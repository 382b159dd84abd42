"""The retrieval cache: canonical query to ranked document ids, tied to an index version."""

from __future__ import annotations

import asyncio
import json
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tokenlean._cache.memory_store import MemoryStore
from tokenlean._cache.request import hash_key, hash_tenant
from tokenlean._cache.stats import CacheStats, StatsRecorder
from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._canonical import canonical_json, canonicalize_text
from tokenlean._errors import ConfigurationError, InvalidInputError

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
        store: where entries live (default: an unbounded :class:`MemoryStore`).
        ttl_s: seconds an entry lives (None: until evicted or invalidated).
        clock: time source for TTLs.

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
        store: CacheStore | None = None,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.time,
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigurationError("ttl_s must be positive or None")
        self.store_backend: CacheStore = store if store is not None else MemoryStore()
        self.ttl_s = ttl_s
        self.clock = clock
        self._secret = self.store_backend.secret
        self._stats = StatsRecorder()

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
        """The cached ranking for ``query``, or None."""
        start = time.perf_counter()
        namespace, key, _ = self._address(query, index_version, tenant, params or {})
        entry = self.store_backend.get(namespace, key)
        if entry is not None and entry.expired(now := self.clock()):
            self.store_backend.delete(Selector(namespace=namespace, key=key, expired_at=now))
            entry = None
        self._stats.lookup("retrieval", entry is not None, (time.perf_counter() - start) * 1000)
        if self.collector is not None:
            self.collector.record_cache("retrieval", entry is not None)
        if entry is None:
            return None
        result: list[Any] = json.loads(entry.payload)
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
        """Cache the ranking (document ids, or ``[id, score]`` pairs) for ``query``.

        Raises:
            NotSerializableError: the ranking has no JSON form; nothing is written.
        """
        if isinstance(ranking, str | bytes):
            raise InvalidInputError("a ranking is a list of document ids, not a single string")
        namespace, key, tenant_id = self._address(query, index_version, tenant, params or {})
        payload = canonical_json(list(ranking)).encode("utf-8")
        now = self.clock()
        self.store_backend.put(
            StoredEntry(
                namespace,
                key,
                payload,
                now,
                now + self.ttl_s if self.ttl_s else None,
                layer="retrieval",
                tenant=tenant_id,
                plan_version=index_version,
            )
        )
        self._stats.count(writes=1)

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
        """Remove the entries computed against ``index_version``; return how many."""
        return len(
            self.store_backend.delete(Selector(layer="retrieval", plan_version=index_version))
        )

    def stats(self) -> CacheStats:
        """Hit rate and latency of the retrieval layer, with the store's usage."""
        entries, size = self.store_backend.usage()
        return self._stats.snapshot(entries, size)
