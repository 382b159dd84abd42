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


def test_a_chat_made_of_a_completion_counts_once(collector: MetricsCollector) -> None:
    """MockLLM.chat runs through complete (two nested event pairs): one call is recorded."""
    from llama_index.core.base.llms.types import ChatMessage

    MockLLM(max_tokens=4).chat([ChatMessage(role="user", content="hello there")])
    assert collector.snapshot()["totals"]["requests"] == 1


def test_the_task_of_a_call_comes_from_its_tags(collector: MetricsCollector) -> None:
    """instrument_tags({"tokenlean_task": ...}) puts each call in its own task, so one handler
    serves every task (effective tokens per task is then real, not 0)."""
    from llama_index.core.instrumentation.dispatcher import instrument_tags

    llm = MockLLM(max_tokens=4)
    for task in ("t1", "t2"):
        with collector.task(task), instrument_tags({"tokenlean_task": task}):
            llm.complete("a question about refunds")
    snapshot = collector.snapshot()
    assert snapshot["totals"]["tasks_done"] == 2
    assert snapshot["headline"]["effective_tokens_per_task"] > 0
    assert snapshot["totals"]["unpriced_models"] == ["MockLLM"]
