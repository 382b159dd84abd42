"""``BudgetedRetriever``: search a hybrid index and pack the results into a token budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tokenlean._cache.retrieval_cache import RetrievalCache
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.packing import Order, PackedContext, pack_chunks
from tokenlean._retrieval.search import HybridSearcher, ScoredChunk

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["BudgetedRetriever"]


class BudgetedRetriever:
    """Hybrid search plus packing under a hard token budget, with an optional retrieval cache.

    Args:
        index: the documents.
        searcher: ranking settings (default: :class:`HybridSearcher` with RRF and the offline
            reranker).
        cache: a :class:`RetrievalCache`; repeated canonical queries then skip search (entries
            are keyed by the index version, so any change to the index invalidates them).
        counter: the token counter that measures the budget (default: tiktoken's default).
        candidates: ranked chunks considered for packing.

    Example:
        >>> from tokenlean.testing import HashingEmbedder
        >>> index = HybridIndex(embedder=HashingEmbedder())
        >>> _ = index.add([{"id": "refunds", "text": "Refunds are paid within five days."},
        ...                {"id": "shipping", "text": "Parcels ship from Lyon every morning."}])
        >>> packed = BudgetedRetriever(index).retrieve("when are refunds paid", budget=40)
        >>> packed.doc_ids[0], packed.tokens <= 40
        ('refunds', True)
    """

    def __init__(
        self,
        index: HybridIndex,
        *,
        searcher: HybridSearcher | None = None,
        cache: RetrievalCache | None = None,
        counter: Callable[[str], int] | None = None,
        candidates: int = 30,
        tenant: str = "default",
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        if candidates < 1:
            raise ConfigurationError("candidates must be >= 1")
        self.index = index
        self.searcher = searcher or HybridSearcher(index)
        self.cache = cache
        self.counter = counter
        self.candidates = candidates
        self.tenant = tenant

    def search(
        self, query: str, *, k: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]:
        """The ``k`` best chunks, from the retrieval cache when this query was seen before.

        Raises:
            InvalidInputError: the query is not a string.
        """
        if not isinstance(query, str):
            raise InvalidInputError("a query must be a string")
        canonical_filters = {
            key: sorted(value, key=str)
            if isinstance(value, set | frozenset | tuple | list)
            else value
            for key, value in (filters or {}).items()
        }
        params = {"k": k, "filters": canonical_filters, "searcher": self._settings()}
        version = self.index.version
        if self.cache is not None:
            cached = self.cache.get(query, index_version=version, tenant=self.tenant, params=params)
            if cached is not None:
                found = self._from_cache(cached)
                if found is not None:
                    return found
        results = self.searcher.search(query, k=k, filters=filters)
        if self.cache is not None:
            ranking = [[r.chunk.id, r.score, r.dense, r.lexical] for r in results]
            self.cache.put(query, ranking, index_version=version, tenant=self.tenant, params=params)
        return results

    def _settings(self) -> dict[str, Any]:
        s = self.searcher
        return {"fusion": s.fusion, "alpha": s.alpha, "candidates": s.candidates,
                "reranker": type(s.reranker).__name__, "dedupe": s.dedupe_threshold,
                "diversity": s.diversity}  # fmt: skip

    def _from_cache(self, ranking: list[Any]) -> list[ScoredChunk] | None:
        by_id = {chunk.id: chunk for chunk in self.index.built().chunks}
        out = []
        for rank, (chunk_id, score, dense, lexical) in enumerate(ranking):
            chunk = by_id.get(chunk_id)
            if chunk is None:
                return None  # the index changed under the same version: search again
            out.append(ScoredChunk(chunk, score, dense, lexical, rank))
        return out

    def retrieve(
        self,
        query: str,
        *,
        budget: int,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        trim: bool = True,
        order: Order = "edges",
    ) -> PackedContext:
        """Search, then pack the best chunks into ``budget`` tokens (at most ``k`` of them).

        Raises:
            ConfigurationError: a negative budget or an unknown order.
        """
        if budget < 0:
            raise ConfigurationError(f"budget must be >= 0, got {budget}")
        ranked = self.search(query, k=max(self.candidates, k or 0), filters=filters)
        packed = pack_chunks(
            ranked, budget, query=query, counter=self.counter, k=k, trim=trim, order=order
        )
        if self.collector is not None:
            self.collector.record_retrieval(packed.tokens)
        return packed

    async def asearch(
        self, query: str, *, k: int = 10, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]:
        """:meth:`search` off the event loop."""
        return await asyncio.to_thread(self.search, query, k=k, filters=filters)

    async def aretrieve(
        self,
        query: str,
        *,
        budget: int,
        k: int | None = None,
        filters: Mapping[str, Any] | None = None,
        trim: bool = True,
        order: Order = "edges",
    ) -> PackedContext:
        """:meth:`retrieve` off the event loop."""
        return await asyncio.to_thread(
            self.retrieve, query, budget=budget, k=k, filters=filters, trim=trim, order=order
        )
