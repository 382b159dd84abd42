"""Both adapters take a store URI, so two replicas of an app share one cache and one
conversation through Redis (here two adapter objects in one process, on one key prefix)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import URL, Prefixes, require_server


@pytest.fixture
def prefix() -> Iterator[str]:
    require_server()
    prefixes = Prefixes()
    yield prefixes.new()
    prefixes.cleanup()


def test_two_langchain_replicas_share_a_cache_and_a_conversation(prefix: str) -> None:
    from langchain_core.language_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_tokenlean import TokenleanCache, TokenleanChatMessageHistory

    uri = f"{URL}?prefix={prefix}"
    first = FakeMessagesListChatModel(responses=[AIMessage("Lyon.")], cache=TokenleanCache(uri))
    second = FakeMessagesListChatModel(responses=[AIMessage("other")], cache=TokenleanCache(uri))
    assert first.invoke([HumanMessage("Where is the warehouse?")]).text == "Lyon."
    assert second.invoke([HumanMessage("Where is the warehouse?")]).text == "Lyon."  # shared hit

    one = TokenleanChatMessageHistory(uri, "ticket-7")
    other = TokenleanChatMessageHistory(uri, "ticket-7")
    one.add_messages([HumanMessage("My order is 4417."), AIMessage("Noted.")])
    assert [m.text for m in other.messages][-2:] == ["My order is 4417.", "Noted."]


def test_two_llamaindex_replicas_share_a_cache_and_a_conversation(prefix: str) -> None:
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.llms import MockLLM
    from llama_index.llms.tokenlean import CachedLLM
    from llama_index.memory.tokenlean import TokenleanMemory

    uri = f"{URL}?prefix={prefix}"
    first, second = CachedLLM(MockLLM(max_tokens=3), uri), CachedLLM(MockLLM(max_tokens=3), uri)
    first.complete("Where is the warehouse?")
    reply = second.complete("Where is the warehouse?")
    assert reply.additional_kwargs["tokenlean_cache"]["layer"] == "exact"

    one = TokenleanMemory(session="ticket-7", store=uri)
    other = TokenleanMemory.from_dict(one.to_dict())  # a replica rebuilt from its settings
    one.put(ChatMessage(role="user", content="My order is 4417."))
    assert [m.content for m in other.get_all()] == ["My order is 4417."]
