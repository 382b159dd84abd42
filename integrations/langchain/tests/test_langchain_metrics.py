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


def test_each_call_takes_its_task_from_the_run_metadata() -> None:
    """One handler, two tasks: metadata={"tokenlean_task": ...} routes each call's tokens."""
    collector = MetricsCollector()
    handler = TokenleanCallbackHandler(collector)
    model = FakeMessagesListChatModel(responses=[reply(0), reply(1)])
    for task in ("a", "b"):
        with collector.task(task):
            model.invoke("q", config={"callbacks": [handler], "metadata": {"tokenlean_task": task}})
    snap = collector.snapshot()
    assert snap["totals"]["tasks_done"] == 2
    assert snap["headline"]["effective_tokens_per_task"] == (110 + 111) / 2


def test_a_hit_of_langchains_own_cache_spends_nothing_even_without_usage() -> None:
    """LangChain's InMemoryCache marks a hit only with total_cost 0: no usage, no spent tokens."""
    from langchain_core.caches import InMemoryCache

    collector = MetricsCollector()
    handler = TokenleanCallbackHandler(collector)
    model = FakeMessagesListChatModel(responses=[AIMessage("ok"), AIMessage("ok")],
                                      cache=InMemoryCache())  # fmt: skip
    model.invoke("same question", config={"callbacks": [handler]})
    spent = collector.snapshot()["totals"]["input_tokens"]
    model.invoke("same question", config={"callbacks": [handler]})
    snap = collector.snapshot()
    assert spent > 0
    assert snap["totals"]["input_tokens"] == spent
    assert snap["totals"]["requests"] == 2


def test_an_unpriced_model_is_named_not_silently_free(caplog: object) -> None:
    collector = MetricsCollector()
    model = FakeMessagesListChatModel(responses=[AIMessage("ok")])
    model.invoke("q", config={"callbacks": [TokenleanCallbackHandler(collector)]})
    assert collector.snapshot()["totals"]["unpriced_models"] != []
    assert "unpriced models" in collector.summary()
