"""TokenleanCache end to end with LangChain chat models: exact and semantic hits, marking."""

from __future__ import annotations

import asyncio

from langchain_core.globals import set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import Generation
from langchain_tokenlean import TokenleanCache

from tokenlean import CachePolicy, CompletionCache, last_user_turn
from tokenlean.testing import HashingEmbedder


def test_repeated_question_is_answered_from_the_exact_cache() -> None:
    """The second identical call returns the first answer without calling the model."""
    model = FakeListChatModel(responses=["first", "second"], cache=TokenleanCache())
    assert model.invoke("Where is my order?").content == "first"
    again = model.invoke("Where is my order?")
    assert again.content == "first"
    assert again.response_metadata["tokenlean_cache"]["layer"] == "exact"


def test_a_tool_schema_in_another_key_order_is_the_same_request() -> None:
    """Bound tools are part of the key in canonical form; another tool is another key."""
    model = FakeListChatModel(responses=["first", "second", "third"], cache=TokenleanCache())
    schema = {
        "type": "function",
        "function": {
            "name": "track",
            "description": "Track",
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
        },
    }
    reordered = {
        "function": {
            "parameters": {"properties": {"order": {"type": "string"}}, "type": "object"},
            "description": "Track",
            "name": "track",
        },
        "type": "function",
    }
    other = {**schema, "function": {**schema["function"], "name": "cancel"}}
    assert model.bind(tools=[schema]).invoke("Where is 1234?").content == "first"
    assert model.bind(tools=[reordered]).invoke("Where is 1234?").content == "first"
    assert model.bind(tools=[other]).invoke("Where is 1234?").content == "second"


def test_paraphrase_is_answered_from_the_semantic_cache_with_the_real_model() -> None:
    """A reworded question is served from the semantic layer (bundled all-MiniLM-L6-v2)."""
    cache = TokenleanCache(
        CompletionCache(policy=CachePolicy.semantic(threshold=0.7, compare=last_user_turn))
    )
    model = FakeListChatModel(responses=["Use the reset link.", "WRONG: model called"], cache=cache)
    system = SystemMessage("You are the support agent of Northwind.")
    first = model.invoke([system, HumanMessage("How do I reset my password?")])
    second = model.invoke([system, HumanMessage("How can I reset my password?")])
    assert first.content == second.content == "Use the reset link."
    marker = second.response_metadata["tokenlean_cache"]
    assert marker["layer"] == "semantic"
    assert 0.7 <= marker["similarity"] < 1.0
    unrelated = model.invoke([system, HumanMessage("What are your opening hours?")])
    assert unrelated.content == "WRONG: model called"  # a miss reaches the model


def test_cached_answers_report_no_spent_tokens() -> None:
    """A hit's usage_metadata is zero; the original usage is kept in the marker."""
    usage = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    model = FakeMessagesListChatModel(
        responses=[AIMessage("answer", usage_metadata=usage)], cache=TokenleanCache()
    )
    assert model.invoke("q").usage_metadata["total_tokens"] == 17  # type: ignore[index]
    hit = model.invoke("q")
    assert hit.usage_metadata["input_tokens"] == 0  # type: ignore[index]
    assert hit.usage_metadata["output_tokens"] == 0  # type: ignore[index]
    assert hit.response_metadata["tokenlean_cache"]["original_usage"]["total_tokens"] == 17


def test_tenants_are_isolated_through_the_adapter() -> None:
    """Two adapters over one cache with different tenants never share answers."""
    shared = CompletionCache()
    acme = FakeListChatModel(responses=["acme answer"], cache=TokenleanCache(shared, tenant="acme"))
    globex = FakeListChatModel(
        responses=["globex answer"], cache=TokenleanCache(shared).for_tenant("globex")
    )
    assert acme.invoke("hi").content == "acme answer"
    assert globex.invoke("hi").content == "globex answer"


def test_global_cache_and_async_calls() -> None:
    """set_llm_cache makes every model use it; ainvoke hits it too."""
    cache = TokenleanCache(
        CompletionCache(
            policy=CachePolicy.semantic(threshold=0.7, compare=last_user_turn),
            embedder=HashingEmbedder(),
        )
    )
    set_llm_cache(cache)
    try:
        model = FakeListChatModel(responses=["one", "two"])

        async def run() -> tuple[str, str]:
            a = await model.ainvoke("status of order 42")
            b = await model.ainvoke("status of order 42")
            return str(a.content), str(b.content)

        assert asyncio.run(run()) == ("one", "one")
    finally:
        set_llm_cache(None)


def test_sampling_temperature_bypasses_the_cache_by_default() -> None:
    """A call sampling at temperature 0.7 is not cached under the default policy."""
    model = FakeListChatModel(responses=["one", "two", "three"], cache=TokenleanCache())
    warm = [model.invoke("hi", temperature=0.7).content for _ in range(2)]
    assert warm == ["one", "two"]
    relaxed = TokenleanCache(CompletionCache(policy=CachePolicy.exact(max_temperature=1.0)))
    model = FakeListChatModel(responses=["one", "two"], cache=relaxed)
    assert [model.invoke("hi", temperature=0.7).content for _ in range(2)] == ["one", "one"]


def test_plain_prompts_that_look_like_json_are_kept_whole() -> None:
    """Two different JSON prompts to a plain LLM never share an answer."""
    cache = TokenleanCache()
    llm_string = "fake-llm"
    cache.update('[{"review": "great product"}]', llm_string, [Generation(text="positive")])
    assert cache.lookup('[{"review": "terrible product"}]', llm_string) is None


def test_an_unserializable_response_is_not_cached_and_does_not_fail_the_call() -> None:
    """A datetime in response metadata is stored as text; the call itself succeeds."""
    from datetime import datetime, timezone

    reply = AIMessage(
        "ok", response_metadata={"created": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    )
    model = FakeMessagesListChatModel(responses=[reply], cache=TokenleanCache())
    assert model.invoke("q").content == "ok"
    assert model.invoke("q").response_metadata["created"].startswith("2026-01-01")


def test_clear_removes_only_the_adapters_tenant() -> None:
    """clear() on one tenant's adapter keeps other tenants' entries; all_tenants=True clears."""
    shared = CompletionCache()
    acme, globex = TokenleanCache(shared, tenant="acme"), TokenleanCache(shared, tenant="globex")
    acme.update("p", "l", [Generation(text="a")])
    globex.update("p", "l", [Generation(text="g")])
    acme.clear()
    assert acme.lookup("p", "l") is None
    assert globex.lookup("p", "l") == [Generation(text="g")]
    globex.clear(all_tenants=True)
    assert globex.lookup("p", "l") is None
