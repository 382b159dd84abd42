"""One behaviour, two adapters: the same scenario through LangChain and through LlamaIndex.

Each adapter is driven through its framework's own entry points (LangChain: a chat model with
``cache=TokenleanCache`` and the callback handler; LlamaIndex: ``CachedLLM`` and the event
handler). The figures must be the same in both, and the same in the cache's stats, the
collector and the exporters: this is where the two adapters can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tokenlean import CompletionCache, MetricsCollector, count_message_tokens

QUESTIONS = ["Where is my parcel?", "Can I return a lamp?", "Where is my parcel?"]
REPLIES = ["It is in Lyon.", "Yes, within 30 days.", "unused"]


@dataclass
class Driver:
    """Asks a question through one framework, with a tokenlean cache and metrics handler."""

    name: str
    ask: Callable[[str], str]
    close: Callable[[], None]


def langchain_driver(cache: CompletionCache, collector: MetricsCollector) -> Driver:
    from langchain_core.language_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_tokenlean import TokenleanCache, TokenleanCallbackHandler

    model = FakeMessagesListChatModel(
        responses=[AIMessage(r) for r in REPLIES], cache=TokenleanCache(cache)
    )
    handler = TokenleanCallbackHandler(collector)

    def ask(question: str) -> str:
        return model.invoke([HumanMessage(question)], config={"callbacks": [handler]}).text

    return Driver("langchain", ask, lambda: None)


def llamaindex_driver(cache: CompletionCache, collector: MetricsCollector) -> Driver:
    from llama_index.callbacks.tokenlean import TokenleanEventHandler
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_chat_callback
    from llama_index.llms.tokenlean import CachedLLM

    class Scripted(CustomLLM):
        replies: list[str]

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="scripted", is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
            return ChatResponse(message=ChatMessage(role="assistant", content=self.replies.pop(0)))

        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise AssertionError("the scenario chats")

        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise AssertionError("the scenario chats")

    llm = CachedLLM(Scripted(replies=list(REPLIES)), cache)
    handler = TokenleanEventHandler(collector)
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)

    def ask(question: str) -> str:
        return str(llm.chat([ChatMessage(role="user", content=question)]).message.content)

    return Driver("llamaindex", ask, lambda: dispatcher.event_handlers.remove(handler))


DRIVERS = {"langchain": langchain_driver, "llamaindex": llamaindex_driver}
Setup = tuple[Driver, CompletionCache, MetricsCollector]


@pytest.fixture(params=sorted(DRIVERS))
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    collector = MetricsCollector()
    cache = CompletionCache(collector=collector)
    driver = DRIVERS[request.param](cache, collector)
    yield driver, cache, collector
    driver.close()


def test_a_repeated_question_is_one_hit_everywhere(
    setup: Setup,
) -> None:
    """Three questions, one repeated: the repeat is answered from the cache, and the stats, the
    collector's lookups and its requests all say one hit of three."""
    driver, cache, collector = setup
    answers = [driver.ask(q) for q in QUESTIONS]
    assert answers == [REPLIES[0], REPLIES[1], REPLIES[0]]
    stats = cache.stats()
    snapshot = collector.snapshot()
    assert (stats.hits, stats.lookups) == (1, 3)
    assert snapshot["headline"]["cache_hit_rate"]["exact"] == {
        "hits": 1,
        "lookups": 3,
        "hit_rate": 0.3333,
    }
    assert snapshot["totals"]["requests"] == 3


def test_the_same_calls_cost_the_same_tokens(
    setup: Setup,
) -> None:
    """Without provider usage both adapters estimate the same prompt the same way: the user
    message as the provider receives it; the cache hit spends nothing."""
    driver, _, collector = setup
    for question in QUESTIONS:
        driver.ask(question)
    expected = sum(
        count_message_tokens([{"role": "user", "content": q}], model="unknown").total
        for q in QUESTIONS[:2]
    )
    totals = collector.snapshot()["totals"]
    assert totals["input_tokens"] == expected
    assert totals["cost_from_estimates_usd"] == totals["cost_usd"]


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_stats_collector_and_exporter_agree_layer_by_layer_on_a_semantic_cache(name: str) -> None:
    """A semantic route: each layer's hits and lookups are the same in the cache's stats, the
    collector and the Prometheus exporter (a lookup that reaches the semantic layer first misses
    the exact one)."""
    from prometheus_client import CollectorRegistry

    from tokenlean import CachePolicy, PrometheusExporter, last_user_turn
    from tokenlean.testing import HashingEmbedder

    registry = CollectorRegistry()
    collector = MetricsCollector(sinks=[PrometheusExporter(registry=registry)])
    cache = CompletionCache(
        policy=CachePolicy.semantic(threshold=0.7, compare=last_user_turn),
        embedder=HashingEmbedder(64),
        collector=collector,
    )
    driver = DRIVERS[name](cache, collector)
    try:
        for question in QUESTIONS:
            driver.ask(question)
    finally:
        driver.close()
    stats = cache.stats()
    from_stats = {layer: (s.hits, s.lookups) for layer, s in stats.layers.items()}
    rates = collector.snapshot()["headline"]["cache_hit_rate"]
    from_collector = {layer: (r["hits"], r["lookups"]) for layer, r in rates.items()}
    assert from_stats == from_collector

    def exported(layer: str, hit: str) -> int:
        value = registry.get_sample_value(
            "tokenlean_cache_lookups_total", {"layer": layer, "hit": hit}
        )
        return int(value or 0)

    from_exporter = {
        layer: (exported(layer, "true"), exported(layer, "true") + exported(layer, "false"))
        for layer in from_stats
    }
    assert from_exporter == from_stats
    assert from_stats["exact"] == (1, 3)
    assert (stats.hits, stats.lookups) == (1, 3)


def test_per_call_bypass_and_ttl_in_both_frameworks() -> None:
    """LangChain run metadata and LlamaIndex keyword arguments give the same per-call options:
    a bypassed call neither reads nor writes the cache; a call's TTL outlives the policy's."""
    from langchain_core.language_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_tokenlean import TokenleanCache, TokenleanCallbackHandler
    from llama_index.core.llms import MockLLM
    from llama_index.llms.tokenlean import CachedLLM

    from tokenlean import CachePolicy

    now = [1000.0]
    lc_cache = CompletionCache(policy=CachePolicy.exact(ttl_s=10), clock=lambda: now[0])
    collector = MetricsCollector()
    handler = TokenleanCallbackHandler(collector)
    model = FakeMessagesListChatModel(
        responses=[AIMessage(f"reply {i}") for i in range(5)], cache=TokenleanCache(lc_cache)
    )

    def lc(question: str, **metadata: Any) -> str:
        config: Any = {"callbacks": [handler], "metadata": metadata}
        return model.invoke([HumanMessage(question)], config=config).text

    li_cache = CompletionCache(policy=CachePolicy.exact(ttl_s=10), clock=lambda: now[0])
    llm = CachedLLM(MockLLM(max_tokens=3), li_cache)

    lc("q", tokenlean_cache="bypass")
    llm.complete("q", tokenlean_cache="bypass")
    for cache in (lc_cache, li_cache):
        assert (cache.stats().writes, cache.stats().bypassed) == (0, 2)
    lc("q", tokenlean_ttl_s=3600)
    llm.complete("q", tokenlean_ttl_s=3600)
    now[0] += 60  # past the policy's 10 s, within the call's hour
    assert lc("q") == "reply 1"  # served from the cache: the model's next reply is not used
    assert llm.complete("q").additional_kwargs["tokenlean_cache"]["layer"] == "exact"


@pytest.mark.parametrize(
    ("tenant", "route"), [("", None), (123, None), (None, None), ("acme", "nope")]
)
def test_both_adapters_refuse_a_bad_tenant_or_route_when_built(tenant: Any, route: Any) -> None:
    """An empty or non-string tenant, or a route the cache has no policy for, is refused when
    the adapter is built, by every caching adapter alike, not at its first model call."""
    from langchain_core.runnables import RunnableLambda
    from langchain_tokenlean import TokenleanCache, TokenleanChainCache
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.llms.tokenlean import CachedLLM
    from llama_index.query_engine.tokenlean import CachedQueryEngine

    class Echo(CustomQueryEngine):
        def custom_query(self, query_str: str) -> str:
            return query_str

    cache = CompletionCache()
    builds: list[Callable[[], object]] = [
        lambda: TokenleanCache(cache, tenant=tenant, route=route),
        lambda: TokenleanChainCache(
            RunnableLambda(lambda x: x, name="echo"), cache=cache, tenant=tenant, route=route
        ),
        lambda: CachedLLM(MockLLM(), cache, tenant=tenant, route=route),
        lambda: CachedQueryEngine(Echo(), cache, tenant=tenant, route=route),
    ]
    for build in builds:
        # ConfigurationError, or pydantic's ValidationError where the adapter is a pydantic model
        # (both ValueErrors, both naming the field)
        with pytest.raises(ValueError, match=r"tenant|no cache policy"):
            build()


def test_both_adapters_name_a_wrong_argument_when_built() -> None:
    """A cache that is neither a CompletionCache nor a store URI, a wrapped object of the wrong
    kind, or a TTL that is not a number of seconds is a ConfigurationError in both adapters."""
    from langchain_tokenlean import TokenleanCache
    from llama_index.core.llms import MockLLM
    from llama_index.llms.tokenlean import CachedLLM
    from llama_index.memory.tokenlean import TokenleanMemory
    from llama_index.query_engine.tokenlean import CachedQueryEngine

    from tokenlean import ConfigurationError

    wrong: list[Callable[[], object]] = [
        lambda: TokenleanCache(123),  # type: ignore[arg-type]
        lambda: CachedLLM(MockLLM(), cache=123),  # type: ignore[arg-type]
        lambda: CachedLLM("gpt-4o"),  # type: ignore[arg-type]
        lambda: CachedQueryEngine(None),  # type: ignore[arg-type]
        lambda: TokenleanMemory(123, session="s"),  # type: ignore[arg-type]
        lambda: CachedLLM.from_dict({}),
        # (LangChain reads per-call options in a callback, and its callback manager logs a
        # callback's error instead of raising it: the call then runs without the options.)
        lambda: CachedLLM(MockLLM()).complete("x", tokenlean_ttl_s="abc"),
    ]
    for build in wrong:
        with pytest.raises(ConfigurationError):
            build()
