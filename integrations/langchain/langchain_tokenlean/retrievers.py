"""LangChain retriever and document compressor over tokenlean's budgeted retrieval.

``TokenleanRetriever`` searches a :class:`~tokenlean.HybridIndex` (BM25 + dense, fused and
reranked) and, with a ``budget``, packs the results into that many tokens. ``k`` caps the number
of documents; without a budget exactly ``k`` chunks come back (fewer only if the index holds
fewer). ``TokenBudgetCompressor`` packs any retriever's documents into a budget, for use with
``ContextualCompressionRetriever``. Each returned document is a chunk, its metadata carrying the
provenance (``doc_id``, ``chunk_id``, ``position``), the score and whether it was trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from tokenlean import BudgetedRetriever, Chunk, PackedContext, ScoredChunk, pack_chunks

__all__ = ["TokenBudgetCompressor", "TokenleanRetriever"]


def _from_scored(result: ScoredChunk) -> Document:
    chunk = result.chunk
    metadata = {**dict(chunk.metadata), "doc_id": chunk.doc_id, "chunk_id": chunk.id,
                "position": chunk.position, "score": result.score}  # fmt: skip
    return Document(page_content=chunk.text, metadata=metadata, id=chunk.id)


def _from_packed(packed: PackedContext, originals: dict[str, dict[str, Any]]) -> list[Document]:
    documents = []
    for item in packed.items:
        metadata = {
            **dict(item.metadata),
            **originals.get(item.chunk_id, {}),
            "doc_id": item.doc_id,
            "chunk_id": item.chunk_id,
            "position": item.position,
            "score": item.score,
            "tokens": item.tokens,
            "trimmed": item.trimmed,
            "marker": item.marker,
        }
        documents.append(Document(page_content=item.text, metadata=metadata, id=item.chunk_id))
    return documents


class TokenleanRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~tokenlean.BudgetedRetriever`.

    Args:
        retriever: the tokenlean retriever (index, searcher, cache).
        k: most documents returned (``invoke(query, k=…)`` overrides it per call).
        budget: token budget of the returned documents together (None: no budget, exactly
            ``k`` chunks).
        filters: metadata filters.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: BudgetedRetriever
    k: int = 4
    budget: int | None = None
    filters: dict[str, Any] | None = None

    def _options(self, kwargs: dict[str, Any]) -> tuple[int, int | None, dict[str, Any] | None]:
        return (int(kwargs.get("k", self.k)), kwargs.get("budget", self.budget),
                kwargs.get("filters", self.filters))  # fmt: skip

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, budget, filters = self._options(kwargs)
        if budget is None:
            return [_from_scored(r) for r in self.retriever.search(query, k=k, filters=filters)]
        packed = self.retriever.retrieve(query, budget=budget, k=k, filters=filters)
        return _from_packed(packed, {})

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, budget, filters = self._options(kwargs)
        if budget is None:
            results = await self.retriever.asearch(query, k=k, filters=filters)
            return [_from_scored(r) for r in results]
        packed = await self.retriever.aretrieve(query, budget=budget, k=k, filters=filters)
        return _from_packed(packed, {})


class TokenBudgetCompressor(BaseDocumentCompressor):
    """Packs any retriever's documents into a token budget (a LangChain document compressor).

    Documents are taken in the order given (a retriever's relevance order), or by
    ``metadata["score"]`` when every document has one; those that do not fit whole are trimmed
    to their sentences most relevant to the query, or dropped. The result never exceeds
    ``budget`` tokens of ``counter`` (default: tokenlean's default tiktoken counter),
    source markers included.
    """

    budget: int = 1000
    k: int | None = None
    trim: bool = True

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        scores = [doc.metadata.get("score") for doc in documents]
        order = list(range(len(documents)))
        if documents and all(isinstance(s, int | float) for s in scores):
            order.sort(key=lambda i: -float(scores[i]))  # type: ignore[arg-type]
        candidates, originals = [], {}
        for rank, i in enumerate(order):
            doc = documents[i]
            doc_id = str(doc.metadata.get("doc_id") or doc.id or f"doc-{i}")
            chunk_id = str(doc.metadata.get("chunk_id") or doc.id or f"{doc_id}#{i}")
            chunk = Chunk(chunk_id, doc_id, int(doc.metadata.get("position", 0)),
                          doc.page_content, 0, len(doc.page_content))  # fmt: skip
            raw = scores[i]
            score = float(raw) if isinstance(raw, int | float) else 1.0 / (rank + 1)
            candidates.append(ScoredChunk(chunk, score, 0.0, 0.0, rank))
            originals[chunk_id] = dict(doc.metadata)
        packed = pack_chunks(candidates, self.budget, query=query, k=self.k, trim=self.trim,
                             order="score")  # fmt: skip
        return _from_packed(packed, originals)
