"""A memory budget that is not a positive whole number of tokens is a configuration error,
named as such, and leaves the transcript as it was."""

from __future__ import annotations

from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import HashingEmbedder


@pytest.mark.parametrize("budget", ["100", 100.0, True, 0, -5, None])
def test_context_refuses_a_budget_that_is_not_a_positive_whole_number(budget: Any) -> None:
    memory = tl.ConversationMemory(embedder=HashingEmbedder(32))
    memory.add("s", [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}])
    with pytest.raises(tl.ConfigurationError, match="positive whole number of tokens"):
        memory.context("s", budget=budget, user="And now?")
    assert memory.count("s") == 2
    assert memory.context("s", budget=100, user="And now?").tokens <= 100


def test_a_numpy_integer_is_a_whole_number_of_tokens() -> None:
    import numpy as np

    memory = tl.ConversationMemory(embedder=HashingEmbedder(32))
    memory.add("s", [{"role": "user", "content": "Hello"}])
    assert memory.context("s", budget=np.int64(100), user="And now?").tokens <= 100


@pytest.mark.parametrize(
    ("session", "tenant"), [(123, "default"), ("s", 7), ("", "default"), ("s", None)]
)
def test_a_session_or_tenant_that_is_not_a_non_empty_string_is_refused(
    session: Any, tenant: Any
) -> None:
    """An int session id would be stored as 123 by one store and as "123" by another."""
    memory = tl.ConversationMemory(embedder=HashingEmbedder(32))
    message = {"role": "user", "content": "Hello"}
    with pytest.raises(tl.ConfigurationError, match="non-empty strings"):
        memory.add(session, [message], tenant=tenant)
    with pytest.raises(tl.ConfigurationError, match="non-empty strings"):
        memory.count(session, tenant=tenant)
    with pytest.raises(tl.ConfigurationError, match="non-empty strings"):
        memory.turns(session, tenant=tenant)


@pytest.mark.parametrize("messages", [None, "Hello", {"role": "user", "content": "Hello"}, 5])
def test_messages_that_are_not_a_list_of_messages_are_refused(messages: Any) -> None:
    memory = tl.ConversationMemory(embedder=HashingEmbedder(32))
    memory.add("s", [{"role": "user", "content": "Hello"}])
    with pytest.raises(tl.MalformedRequestError, match="list of message objects"):
        memory.add("s", messages)
    assert memory.count("s") == 1


def test_turn_from_message_checks_a_message_as_add_does() -> None:
    turn = tl.Turn.from_message({"role": "user", "content": "Hello"}, 3)
    assert (turn.role, turn.content, turn.index) == ("user", "Hello", 3)
    with pytest.raises(tl.MalformedRequestError, match="tool_call_id"):
        tl.Turn.from_message({"role": "tool", "content": "result"})
