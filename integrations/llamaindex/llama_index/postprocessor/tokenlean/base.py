"""Packs any LlamaIndex retriever's nodes into a hard token budget.

Nodes are taken by score (or in the order given when they have none); a node that does not fit
whole is trimmed to its sentences most relevant to the query, or dropped. The texts returned
never exceed ``budget`` tokens together (tokenlean's default tiktoken counter, source markers
included), and each node's metadata records ``tokens`` and ``trimmed``.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from tokenlean import Chunk, ScoredChunk, pack_chunks

__all__ = ["TokenBudgetPostprocessor"]


class TokenBudgetPostprocessor(BaseNodePostprocessor):
    """A ``BaseNodePostprocessor`` that keeps what fits in ``budget`` tokens, most useful first."""

    budget: int = Field(default=1000, ge=0, description="Token budget of all nodes together.")
    top_k: int | None = Field(default=None, description="Most nodes kept.")
    trim: bool = Field(default=True, description="Trim nodes to their relevant sentences.")

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanTokenBudgetPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = query_bundle.query_str if query_bundle is not None else ""
        order = list(range(len(nodes)))
        if nodes and all(n.score is not None for n in nodes):
            order.sort(key=lambda i: -float(nodes[i].score or 0.0))
        by_id: dict[str, NodeWithScore] = {}
        candidates = []
        for rank, i in enumerate(order):
            node = nodes[i]
            text = node.node.get_content(metadata_mode=MetadataMode.NONE)
            source = node.node.source_node
            doc_id = source.node_id if source is not None else node.node.node_id
            chunk = Chunk(node.node.node_id, doc_id, rank, text, 0, len(text))
            score = float(node.score) if node.score is not None else 1.0 / (rank + 1)
            candidates.append(ScoredChunk(chunk, score, 0.0, 0.0, rank))
            by_id[node.node.node_id] = node
        packed = pack_chunks(
            candidates, self.budget, query=query, k=self.top_k, trim=self.trim, order="score"
        )
        out = []
        for item in packed.items:
            original = by_id[item.chunk_id]
            metadata: dict[str, Any] = {**original.node.metadata, "tokens": item.tokens,
                                        "trimmed": item.trimmed}  # fmt: skip
            packed_node = TextNode(
                id_=item.chunk_id,
                text=item.text,
                metadata=metadata,
                relationships=original.node.relationships,
                # The budget covers the text the model sees: metadata is not sent to it.
                excluded_llm_metadata_keys=list(metadata),
                excluded_embed_metadata_keys=list(metadata),
            )
            out.append(NodeWithScore(node=packed_node, score=original.score))
        return out
