"""A LlamaIndex retriever over tokenlean's :class:`~tokenlean.BudgetedRetriever`.

Returns chunks as ``NodeWithScore`` (a ``TextNode`` whose id is the chunk id, with the source
document as its ``SOURCE`` relationship and the provenance in metadata). With ``budget`` set, the
nodes together fit that many tokens (chunks may be trimmed to their relevant sentences);
``similarity_top_k`` caps how many come back.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from tokenlean import BudgetedRetriever

__all__ = ["TokenleanRetriever"]


def _node(
    chunk_id: str, doc_id: str, text: str, score: float, metadata: dict[str, Any]
) -> NodeWithScore:
    node = TextNode(
        id_=chunk_id,
        text=text,
        metadata=metadata,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)},
        # Provenance stays in metadata but is not sent to the LLM or the embedder: the budget
        # covers the text the model sees.
        excluded_llm_metadata_keys=list(metadata),
        excluded_embed_metadata_keys=list(metadata),
    )
    return NodeWithScore(node=node, score=score)


class TokenleanRetriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` over tokenlean's hybrid search and budget packing.

    Args:
        retriever: the tokenlean retriever (index, searcher, cache).
        similarity_top_k: most nodes returned.
        budget: token budget of all returned nodes together (None: no budget).
        filters: tokenlean metadata filters (``{"lang": "en"}``).
    """

    def __init__(
        self,
        retriever: BudgetedRetriever,
        *,
        similarity_top_k: int = 4,
        budget: int | None = None,
        filters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._retriever = retriever
        self.similarity_top_k = similarity_top_k
        self.budget = budget
        self.filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        nodes = []
        if self.budget is None:
            for r in self._retriever.search(query, k=self.similarity_top_k, filters=self.filters):
                chunk = r.chunk
                metadata = {**dict(chunk.metadata), "doc_id": chunk.doc_id,
                            "position": chunk.position}  # fmt: skip
                nodes.append(_node(chunk.id, chunk.doc_id, chunk.text, r.score, metadata))
            return nodes
        packed = self._retriever.retrieve(
            query, budget=self.budget, k=self.similarity_top_k, filters=self.filters, order="score"
        )
        for item in packed.items:
            metadata = {**dict(item.metadata), "doc_id": item.doc_id, "position": item.position,
                        "tokens": item.tokens, "trimmed": item.trimmed}  # fmt: skip
            nodes.append(_node(item.chunk_id, item.doc_id, item.text, item.score, metadata))
        return nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        import asyncio

        return await asyncio.to_thread(self._retrieve, query_bundle)
