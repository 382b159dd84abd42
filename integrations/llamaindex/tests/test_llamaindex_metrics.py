"""TokenleanEventHandler: the numbers of a LlamaIndex query engine driven by a mock LLM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.callbacks.tokenlean import TokenleanEventHandler
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.llms.tokenlean import CachedLLM

from tokenlean import CompletionCache, MetricsCollector


@pytest.fixture
def collector() -> Iterator[MetricsCollector]:
    collector = MetricsCollector()
    handler = TokenleanEventHandler(collector, tenant="acme")
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield collector
    dispatcher.event_handlers.remove(handler)


def test_a_query_engine_is_measured_and_cache_hits_cost_nothing(
    collector: MetricsCollector,
) -> None:
    """Each LLM call is recorded with estimated tokens; a CachedLLM hit is a free cache hit."""
    llm = CachedLLM(MockLLM(max_tokens=8), CompletionCache(collector=collector))
    index = VectorStoreIndex.from_documents(
        [
            Document(text="Refunds are paid within five days."),
            Document(text="Parcels ship from Lyon."),
        ],
        embed_model=MockEmbedding(embed_dim=8),
    )
    engine = index.as_query_engine(llm=llm, embed_model=MockEmbedding(embed_dim=8))
    engine.query("When are refunds paid?")
    first = collector.snapshot()["totals"]
    assert first["requests"] >= 1
    assert first["input_tokens"] > 0
    assert first["cost_from_estimates_usd"] == first["cost_usd"]  # estimates, and labelled so
    engine.query("When are refunds paid?")  # the same prompt: served by CachedLLM
    second = collector.snapshot()
    assert second["totals"]["input_tokens"] == first["input_tokens"]
    assert second["headline"]["cache_hit_rate"]["exact"]["hits"] >= 1
