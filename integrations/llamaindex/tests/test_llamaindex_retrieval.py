"""TokenleanRetriever and TokenBudgetPostprocessor for LlamaIndex."""

from __future__ import annotations

import asyncio

from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.tokenlean import TokenBudgetPostprocessor
from llama_index.retrievers.tokenlean import TokenleanRetriever

from tokenlean import BudgetedRetriever, HybridIndex, get_token_counter
from tokenlean.testing import HashingEmbedder

COUNT = get_token_counter()


def make() -> BudgetedRetriever:
    index = HybridIndex(embedder=HashingEmbedder(64))
    refunds = "Refunds are paid within five days."
    index.add(
        [
            {"id": "refunds", "text": refunds, "metadata": {"team": "billing"}},
            {"id": "shipping", "text": "Parcels ship from Lyon every morning."},
            {"id": "warranty", "text": "The warranty covers batteries for two years."},
        ]
    )
    return BudgetedRetriever(index)


def test_the_retriever_returns_nodes_with_their_source_document() -> None:
    """Nodes carry the chunk id, the source document relationship and metadata."""
    nodes = TokenleanRetriever(make(), similarity_top_k=2).retrieve("when are refunds paid")
    assert len(nodes) == 2
    first = nodes[0]
    assert first.node.node_id == "refunds#0"
    assert first.node.relationships[NodeRelationship.SOURCE].node_id == "refunds"
    assert first.node.metadata["team"] == "billing"
    assert (
        asyncio.run(TokenleanRetriever(make()).aretrieve("parcels"))[0].node.metadata["doc_id"]
        == "shipping"
    )


def test_a_budgeted_retriever_fits_its_budget() -> None:
    """With a budget the nodes' texts fit it together."""
    nodes = TokenleanRetriever(make(), similarity_top_k=3, budget=25).retrieve("refunds batteries")
    assert nodes
    assert sum(COUNT(n.node.get_content()) for n in nodes) <= 25


def test_the_postprocessor_packs_any_nodes_into_the_budget() -> None:
    """Nodes from any retriever are trimmed or dropped to fit; the best-scored come first."""
    long_text = " ".join(f"Sentence {i} is about shipping from Lyon." for i in range(40))
    nodes = [
        NodeWithScore(node=TextNode(id_="a", text=long_text), score=0.2),
        NodeWithScore(node=TextNode(id_="b", text="Refunds take five days."), score=0.9),
    ]
    kept = TokenBudgetPostprocessor(budget=60).postprocess_nodes(
        nodes, query_bundle=QueryBundle("refund days")
    )
    assert [n.node.node_id for n in kept] == ["b", "a"]
    assert sum(COUNT(n.node.get_content()) for n in kept) <= 60
    assert kept[1].node.metadata["trimmed"] is True
