"""TokenleanRetriever passes LangChain's retriever suite; the compressor packs into a budget."""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests
from langchain_tokenlean import TokenBudgetCompressor, TokenleanRetriever

from tokenlean import BudgetedRetriever, HybridIndex, get_token_counter
from tokenlean.testing import HashingEmbedder

TOPICS = [
    "refunds are paid in five days",
    "parcels ship from Lyon",
    "the warranty lasts two years",
    "passwords reset by email",
    "invoices are sent monthly",
    "batteries are replaceable",
]


def make_retriever() -> BudgetedRetriever:
    index = HybridIndex(embedder=HashingEmbedder(64))
    index.add([{"id": f"d{i}", "text": f"Policy {i}: {text}.", "metadata": {"n": i}}
               for i, text in enumerate(TOPICS)])  # fmt: skip
    return BudgetedRetriever(index)


class TestTokenleanRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[TokenleanRetriever]:
        return TokenleanRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": make_retriever()}

    @property
    def retriever_query_example(self) -> str:
        return "when are refunds paid"


def test_a_budgeted_retriever_returns_chunks_with_provenance_within_the_budget() -> None:
    """With a budget, documents fit it together and carry their source and score."""
    retriever = TokenleanRetriever(retriever=make_retriever(), k=5, budget=40)
    docs = retriever.invoke("when are refunds paid")
    assert docs[0].metadata["doc_id"] == "d0"
    assert sum(d.metadata["tokens"] for d in docs) <= 40
    assert {"chunk_id", "position", "score", "marker", "n"} <= set(docs[0].metadata)
    assert len(retriever.invoke("policy", budget=15)) < len(retriever.invoke("policy"))


def test_the_compressor_packs_any_documents_into_the_budget() -> None:
    """Documents in relevance order are packed, trimmed or dropped to fit the budget."""
    count = get_token_counter()
    long_text = " ".join(f"Sentence {i} is about shipping." for i in range(30))
    documents = [
        Document(page_content=long_text, metadata={"source": "a"}),
        Document(page_content="Refunds take five days.", metadata={"source": "b"}),
    ]
    packed = TokenBudgetCompressor(budget=60).compress_documents(documents, "refund days")
    total = sum(count(d.page_content) for d in packed)
    assert total <= 60
    assert packed[0].metadata["source"] == "a"
    assert packed[0].metadata["trimmed"] is True
    assert [d.metadata["source"] for d in packed] == ["a", "b"]


def test_scores_in_metadata_decide_the_order() -> None:
    """When every document has a score, the highest-scored goes in first."""
    documents = [Document(page_content="low", metadata={"score": 0.1}),
                 Document(page_content="high", metadata={"score": 0.9})]  # fmt: skip
    packed = TokenBudgetCompressor(budget=100).compress_documents(documents, "q")
    assert [d.page_content for d in packed] == ["high", "low"]
