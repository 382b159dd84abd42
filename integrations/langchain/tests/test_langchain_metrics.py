"""TokenleanCallbackHandler: the numbers of a LangChain chain, cache hits not counted as spent."""

from __future__ import annotations

from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_tokenlean import TokenleanCache, TokenleanCallbackHandler

from tokenlean import CompletionCache, MetricsCollector, OpenTelemetryExporter, PriceTable


def reply(i: int) -> AIMessage:
    return AIMessage(f"answer {i}", usage_metadata={"input_tokens": 100 + i, "output_tokens": 10,
                     "total_tokens": 110 + i, "input_token_details": {"cache_read": 50}},
                     response_metadata={"model_name": "gpt-4o-mini"})  # fmt: skip


def test_a_chain_records_provider_usage_costs_and_cache_hits() -> None:
    """Provider-reported usage is recorded with its cost; a cache hit spends no tokens."""
    collector = MetricsCollector()
    cache = TokenleanCache(CompletionCache(collector=collector))  # the cache reports its lookups
    model = FakeMessagesListChatModel(responses=[reply(0), reply(1)], cache=cache)
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")]) | model
    handler = TokenleanCallbackHandler(collector, tenant="acme")
    with collector.task("ticket") as task:
        handler.task = task
        chain.invoke({"q": "first question"}, config={"callbacks": [handler]})
        chain.invoke({"q": "second question"}, config={"callbacks": [handler]})
        chain.invoke({"q": "first question"}, config={"callbacks": [handler]})  # cache hit
        collector.accept(task)
    snap = collector.snapshot()
    assert snap["totals"]["requests"] == 3
    assert snap["totals"]["input_tokens"] == 100 + 101
    assert snap["totals"]["output_tokens"] == 20
    assert snap["headline"]["cache_hit_rate"]["exact"] == {
        "hits": 1,
        "lookups": 3,
        "hit_rate": 0.3333,
    }
    expected = PriceTable.default().cost("gpt-4o-mini", input_tokens=201, output_tokens=20,
                                         cached_tokens=100).usd  # fmt: skip
    assert abs(snap["totals"]["cost_usd"] - expected) < 1e-9
    assert snap["headline"]["effective_tokens_per_task"] == 221
    assert snap["totals"]["cost_from_estimates_usd"] == 0.0


def test_no_raw_prompt_text_reaches_an_exporter() -> None:
    """A secret in the prompt never appears in exported metric names, attributes or values."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    collector = MetricsCollector(
        sinks=[OpenTelemetryExporter(MeterProvider(metric_readers=[reader]).get_meter("t"))]
    )
    model = FakeMessagesListChatModel(responses=[AIMessage("ok")])
    secret = "my password is hunter2 and my email is ada@example.com"
    model.invoke(secret, config={"callbacks": [TokenleanCallbackHandler(collector, tenant="acme")]})
    exported = reader.get_metrics_data().to_json()
    assert "hunter2" not in exported
    assert "ada@example.com" not in exported
    assert "acme" not in exported
    assert "gen_ai.client.token.usage" in exported
