"""CachedLLM: hits skip the wrapped LLM, streams replay, instrumentation events still fire."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.llms.tokenlean import CachedLLM

from tokenlean import CachePolicy, CompletionCache, last_user_turn
from tokenlean.testing import HashingEmbedder


class CountingLLM(CustomLLM):
    """A fake LLM that answers 'answer N' for its N-th call and counts calls."""

    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="counting-fake")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=f"answer {self.calls}: a reply long enough to stream")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        text = self.complete(prompt, formatted=formatted).text

        def gen() -> CompletionResponseGen:
            so_far = ""
            for word in text.split(" "):
                so_far += ("" if not so_far else " ") + word
                yield CompletionResponse(text=so_far, delta=word)

        return gen()


class Collector(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Collector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def events() -> Iterator[list[BaseEvent]]:
    handler = Collector(events=[])
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler.events
    dispatcher.event_handlers.remove(handler)


def names(events: list[BaseEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_repeated_chat_is_served_from_the_cache_with_events(events: list[BaseEvent]) -> None:
    """The second chat does not reach the LLM; start and end events still fire, marked as a hit."""
    inner = CountingLLM()
    llm = CachedLLM(inner)
    messages = [ChatMessage(role="user", content="Where is my order?")]
    first = llm.chat(messages)
    events.clear()
    second = llm.chat(messages)
    assert inner.calls == 1
    assert second.message.content == first.message.content
    assert second.additional_kwargs["tokenlean_cache"]["layer"] == "exact"
    assert names(events) == ["LLMChatStartEvent", "LLMChatEndEvent"]


def test_a_cached_chat_replays_as_a_stream(events: list[BaseEvent]) -> None:
    """stream_chat after chat replays the cached text in chunks, with progress events."""
    inner = CountingLLM()
    llm = CachedLLM(inner)
    messages = [ChatMessage(role="user", content="Where is my order?")]
    full = llm.chat(messages).message.content
    events.clear()
    chunks = list(llm.stream_chat(messages))
    assert inner.calls == 1
    assert len(chunks) > 1
    assert "".join(c.delta or "" for c in chunks) == full
    assert chunks[-1].message.content == full
    assert names(events)[0] == "LLMChatStartEvent"
    assert "LLMChatInProgressEvent" in names(events)
    assert names(events)[-1] == "LLMChatEndEvent"


def test_a_fully_consumed_stream_is_cached_and_a_broken_one_is_not() -> None:
    """Only a stream read to its end is stored."""
    inner = CountingLLM()
    llm = CachedLLM(inner)
    stream = llm.stream_complete("partial")
    next(stream)  # abandoned after one chunk
    assert llm.complete("partial").text.startswith("answer 2")
    full = "".join(c.delta or "" for c in llm.stream_complete("whole"))
    assert llm.complete("whole").text.replace(" ", "") == full.replace(" ", "")
    assert inner.calls == 3


def test_completion_and_async_paths_hit(events: list[BaseEvent]) -> None:
    """acomplete, achat and the async streams are served from the cache after a first call."""
    inner = CountingLLM()
    llm = CachedLLM(inner)
    messages = [ChatMessage(role="user", content="status of order 42")]

    async def run() -> list[str]:
        a = (await llm.acomplete("hello")).text
        b = (await llm.acomplete("hello")).text
        c = (await llm.achat(messages)).message.content or ""
        d = (await llm.achat(messages)).message.content or ""
        stream = await llm.astream_chat(messages)
        e = "".join([chunk.delta or "" async for chunk in stream])
        stream2 = await llm.astream_complete("hello")
        f = "".join([chunk.delta or "" async for chunk in stream2])
        return [a, b, c, d, e, f]

    a, b, c, d, e, f = asyncio.run(run())
    assert a == b == f
    assert c == d == e
    assert inner.calls == 2


def test_paraphrases_hit_the_semantic_layer_and_tenants_stay_apart() -> None:
    """With a semantic policy a reworded question is answered; another tenant is not."""
    cache = CompletionCache(
        policy=CachePolicy.semantic(threshold=0.7, compare=last_user_turn),
        embedder=HashingEmbedder(),
    )
    inner = CountingLLM()
    acme = CachedLLM(inner, cache, tenant="acme")
    globex = CachedLLM(inner, cache, tenant="globex")
    system = ChatMessage(role="system", content="You are a support agent.")
    first = acme.chat([system, ChatMessage(role="user", content="where is my parcel right now")])
    second = acme.chat([system, ChatMessage(role="user", content="where is my parcel now")])
    assert second.message.content == first.message.content
    assert second.additional_kwargs["tokenlean_cache"]["layer"] == "semantic"
    globex.chat([system, ChatMessage(role="user", content="where is my parcel right now")])
    assert inner.calls == 2


def test_the_real_embedding_model_answers_a_paraphrase() -> None:
    """With the bundled all-MiniLM-L6-v2, 'How can I reset my password?' hits 'How do I...'."""
    pytest.importorskip("sentence_transformers")
    inner = CountingLLM()
    llm = CachedLLM(
        inner, CompletionCache(policy=CachePolicy.semantic(threshold=0.7, compare=last_user_turn))
    )
    llm.chat([ChatMessage(role="user", content="How do I reset my password?")])
    hit = llm.chat([ChatMessage(role="user", content="How can I reset my password?")])
    assert hit.additional_kwargs["tokenlean_cache"]["layer"] == "semantic"
    assert inner.calls == 1


class ToolCallingLLM(CountingLLM):
    """Answers with a tool call in the message's additional_kwargs."""

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        from llama_index.core.base.llms.types import ChatResponse

        self.calls += 1
        calls = {"tool_calls": [{"id": "1", "name": "lookup"}]}
        message = ChatMessage(role="assistant", content="calling the tool", additional_kwargs=calls)
        return ChatResponse(message=message)


def test_a_streamed_hit_keeps_the_tool_calls_on_its_last_chunk() -> None:
    """The final replayed chunk carries the full message, additional_kwargs included."""
    inner = ToolCallingLLM()
    llm = CachedLLM(inner)
    messages = [ChatMessage(role="user", content="look it up")]
    llm.chat(messages)
    chunks = list(llm.stream_chat(messages))
    assert chunks[-1].message.additional_kwargs["tool_calls"][0]["name"] == "lookup"
    assert inner.calls == 1


def test_messages_differing_only_in_tool_calls_do_not_share_an_entry() -> None:
    """Two histories with the same text but different tool calls are different requests."""
    inner = CountingLLM()
    llm = CachedLLM(inner)

    def history(tool: str) -> list[ChatMessage]:
        return [ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [tool]}),
                ChatMessage(role="user", content="and now?")]  # fmt: skip

    llm.chat(history("a"))
    llm.chat(history("b"))
    assert inner.calls == 2


def test_cached_llm_drives_a_function_agent_and_caches_its_tool_calling_turns() -> None:
    """FunctionAgent (streaming, tool calls) runs on CachedLLM; the same question again is
    answered from the cache at every model step, while the tool itself still runs."""
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.tools import FunctionTool

    calls: list[str] = []

    def get_weather(city: str = "Paris") -> str:
        """The weather of a city."""
        calls.append(city)
        return f"sunny in {city}"

    llm = CachedLLM(MockFunctionCallingLLM())
    assert llm.metadata.is_function_calling_model
    for streaming in (True, False):
        agent = FunctionAgent(
            tools=[FunctionTool.from_defaults(get_weather)], llm=llm, streaming=streaming
        )

        async def ask(agent: FunctionAgent = agent) -> str:
            return str(await agent.run("What's the weather?"))

        first = asyncio.run(ask())
        before = llm.cache.stats().hits
        second = asyncio.run(ask())
        assert first == second == "Tool calls complete."
        assert llm.cache.stats().hits - before == 2  # the tool-calling step and the answer
    assert calls == ["Paris"] * 4


def test_tool_schemas_are_part_of_the_key() -> None:
    """The same messages with another tool set are another entry."""
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.tools import FunctionTool

    def a(x: int = 1) -> int:
        """Tool a."""
        return x

    def b(y: str = "q") -> str:
        """Tool b."""
        return y

    llm = CachedLLM(MockFunctionCallingLLM())
    llm.chat_with_tools([FunctionTool.from_defaults(a)], user_msg="go")
    llm.chat_with_tools([FunctionTool.from_defaults(b)], user_msg="go")
    llm.chat_with_tools([FunctionTool.from_defaults(a)], user_msg="go")
    stats = llm.cache.stats()
    assert (stats.hits, stats.writes) == (1, 2)
    response = llm.chat_with_tools([FunctionTool.from_defaults(a)], user_msg="go")
    assert [t.tool_name for t in llm.get_tool_calls_from_response(response)] == ["a"]


def test_a_plain_llm_says_it_cannot_call_tools() -> None:
    from llama_index.core.llms import MockLLM
    from llama_index.core.tools import FunctionTool

    from tokenlean import ConfigurationError

    def a(x: int = 1) -> int:
        """Tool a."""
        return x

    llm = CachedLLM(MockLLM())
    assert not llm.metadata.is_function_calling_model
    with pytest.raises(ConfigurationError, match="does not call tools"):
        llm.chat_with_tools([FunctionTool.from_defaults(a)], user_msg="go")


def test_to_dict_and_from_dict_keep_the_llm_and_the_cache(tmp_path: Any) -> None:
    """A round trip rebuilds the wrapped LLM and a cache on the same SQLite file with the same
    policies, so an answer cached before is a hit after."""
    from llama_index.core.llms import MockLLM

    from tokenlean import SQLiteStore

    path = tmp_path / "cache.db"
    policy = CachePolicy.exact(ttl_s=3600)
    llm = CachedLLM(
        MockLLM(max_tokens=7),
        CompletionCache(SQLiteStore(path), policy=policy, routes={"r": CachePolicy.off()}),
        tenant="acme",
    )
    first = llm.complete("hello there")
    data = llm.to_dict()
    llm.cache.close()
    again = CachedLLM.from_dict(data)
    assert isinstance(again.llm, MockLLM)
    assert again.llm.max_tokens == 7
    assert again.tenant == "acme"
    assert again.cache.policy == policy
    assert set(again.cache.routes) == {"r"}
    response = again.complete("hello there")
    assert response.text == first.text
    assert response.additional_kwargs["tokenlean_cache"]["layer"] == "exact"
    again.cache.close()


def test_from_dict_keeps_what_each_route_compares() -> None:
    """last_user_turn and a TemplateSplitter's settings come back; a custom splitter, which
    cannot be serialized, is a ConfigurationError asking for cache=, never another rule."""
    from llama_index.core.llms import MockLLM

    from tokenlean import ConfigurationError, TemplateSplitter

    routes = {
        "faq": CachePolicy.semantic(compare=last_user_turn),
        "rag": CachePolicy.semantic(compare=TemplateSplitter(learn_requests=6)),
    }
    llm = CachedLLM(MockLLM(), CompletionCache(routes=routes, embedder=HashingEmbedder()))
    again = CachedLLM.from_dict(llm.to_dict())
    assert again.cache.routes["faq"].compare is last_user_turn
    splitter = again.cache.routes["rag"].compare
    assert isinstance(splitter, TemplateSplitter)
    assert splitter.learn_requests == 6
    assert again.cache.policy.compare is None  # the default policy is exact

    def own(request: Any) -> tuple[str, str] | None:
        return None

    custom = CachedLLM(MockLLM(), CompletionCache(
        routes={"own": CachePolicy.semantic(compare=own)}, embedder=HashingEmbedder()))  # fmt: skip
    data = custom.to_dict()
    with pytest.raises(ConfigurationError, match="route 'own' compares with a custom splitter"):
        CachedLLM.from_dict(data)
    assert CachedLLM.from_dict(data, cache=custom.cache).cache is custom.cache
