"""The memory middleware records every turn of a run by the time ``invoke`` returns: the final
reply, tool calls and tool results, once each, the same with ``invoke`` and ``ainvoke``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langchain_tokenlean import TokenleanMemoryMiddleware
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from tokenlean import ConversationMemory, Turn
from tokenlean.testing import FaultyTranscriptStore, HashingEmbedder

MODES = ["invoke", "ainvoke"]


class RecordingModel(FakeMessagesListChatModel):
    """A fake chat model that binds tools and records the messages of every call."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _run(agent: Any, text: str, thread: str, mode: str) -> dict[str, Any]:
    payload = {"messages": [HumanMessage(text)]}
    config = {"configurable": {"thread_id": thread}}
    if mode == "ainvoke":
        return dict(asyncio.run(agent.ainvoke(payload, config)))
    return dict(agent.invoke(payload, config))


def _shown(turns: list[Turn]) -> list[str]:
    return [f"{t.role}: {t.content}" for t in turns]


@tool
def lookup_order(order: str) -> str:
    """Look an order up in the warehouse system."""
    return f"Order {order} left the Lyon warehouse this morning."


@tool(return_direct=True)
def cancel_order(order: str) -> str:
    """Cancel an order; its confirmation is the answer."""
    return f"Order {order} is cancelled."


def _lookup(order: str, call: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "lookup_order", "args": {"order": order},
                                      "id": call}])  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_after_one_run_the_transcript_ends_with_the_assistant_reply(mode: str) -> None:
    """When invoke (or ainvoke) returns, the transcript holds the question and the reply."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[AIMessage("It left Lyon.")], seen=[])
    agent = create_agent(model, system_prompt="You are the support agent.",
                         middleware=[TokenleanMemoryMiddleware(memory, budget=300)],
                         checkpointer=InMemorySaver())  # fmt: skip
    state = _run(agent, "Where is order 1234?", "t", mode)
    turns = memory.turns("t")
    assert _shown(turns) == ["user: Where is order 1234?", "assistant: It left Lyon."]
    assert [t.id for t in turns] == [m.id for m in state["messages"]]


@pytest.mark.parametrize("mode", MODES)
def test_two_replicas_with_their_own_checkpointers_share_every_turn_in_order(
    mode: str, tmp_path: Path
) -> None:
    """Two agents, each with its own InMemorySaver, over one SQLite transcript: each sees the
    other's whole exchange, in order, and its model receives the other's reply."""
    uri = f"sqlite:///{tmp_path / 'memory.db'}"
    models = [RecordingModel(responses=[AIMessage(f"Noted ({name}).")], seen=[])
              for name in ("first", "second", "third")]  # fmt: skip
    agents = [create_agent(model, system_prompt="You are the support agent.",
                           middleware=[TokenleanMemoryMiddleware(
                               ConversationMemory(uri, embedder=HashingEmbedder(64)),
                               budget=500)],
                           checkpointer=InMemorySaver())
              for model in models[:2]]  # fmt: skip
    _run(agents[0], "My order 1234 went to Paris by mistake.", "ticket-42", mode)
    _run(agents[1], "Where did you say order 1234 went?", "ticket-42", mode)
    expected = [
        "user: My order 1234 went to Paris by mistake.",
        "assistant: Noted (first).",
        "user: Where did you say order 1234 went?",
        "assistant: Noted (second).",
    ]
    received = [m.text for m in models[1].seen[-1][1:]]
    assert received == [line.split(": ", 1)[1] for line in expected[:3]]
    reader = ConversationMemory(uri, embedder=HashingEmbedder(64))  # a third replica
    assert _shown(reader.turns("ticket-42")) == expected
    agents[0] = create_agent(models[2], middleware=[TokenleanMemoryMiddleware(
        ConversationMemory(uri, embedder=HashingEmbedder(64)), budget=500)],
        checkpointer=InMemorySaver())  # fmt: skip
    _run(agents[0], "Thanks!", "ticket-42", mode)
    assert _shown(reader.turns("ticket-42")) == [*expected, "user: Thanks!",
                                                 "assistant: Noted (third)."]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_using_run_stores_the_call_the_result_and_the_reply_once_each(mode: str) -> None:
    """A run with a tool call stores the question, the tool call, the tool result and the final
    reply exactly once, in order, with the checkpointer's ids; the next run adds only its own."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[_lookup("1234", "call-1"), AIMessage("It left Lyon."),
                                      _lookup("77", "call-2"), AIMessage("It left Lyon too.")],
                           seen=[])  # fmt: skip
    agent = create_agent(model, tools=[lookup_order],
                         middleware=[TokenleanMemoryMiddleware(memory, budget=600)],
                         checkpointer=InMemorySaver())  # fmt: skip
    state = _run(agent, "Where is order 1234?", "tools", mode)
    turns = memory.turns("tools")
    assert [(t.role, t.content) for t in turns] == [
        ("user", "Where is order 1234?"),
        ("assistant", ""),
        ("tool", "Order 1234 left the Lyon warehouse this morning."),
        ("assistant", "It left Lyon."),
    ]
    assert [c["id"] for c in turns[1].tool_calls] == ["call-1"]
    assert turns[2].tool_call_id == "call-1"
    assert [t.id for t in turns] == [m.id for m in state["messages"]]
    state = _run(agent, "And order 77?", "tools", mode)
    turns = memory.turns("tools")
    assert len(turns) == 8
    assert [t.id for t in turns] == [m.id for m in state["messages"]]  # nothing twice


@pytest.mark.parametrize("mode", MODES)
def test_a_run_that_ends_on_a_tool_result_stores_that_result(mode: str) -> None:
    """A return_direct tool ends the run without another model call; its result is stored."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    call = AIMessage("", tool_calls=[{"name": "cancel_order", "args": {"order": "1234"},
                                      "id": "call-1"}])  # fmt: skip
    model = RecordingModel(responses=[call], seen=[])
    agent = create_agent(model, tools=[cancel_order],
                         middleware=[TokenleanMemoryMiddleware(memory, budget=600)],
                         checkpointer=InMemorySaver())  # fmt: skip
    _run(agent, "Cancel order 1234.", "direct", mode)
    assert _shown(memory.turns("direct")) == [
        "user: Cancel order 1234.",
        "assistant: ",
        "tool: Order 1234 is cancelled.",
    ]
    assert len(model.seen) == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_reply_is_stored_as_later_after_model_hooks_leave_it(mode: str) -> None:
    """A PII middleware that redacts the reply after the model call (its after_model hook runs
    after any recording at that point would): the transcript holds the redacted reply only,
    and the next run is not refused for a changed message."""
    from langchain.agents.middleware import PIIMiddleware

    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[AIMessage("Write to ada@example.com."), AIMessage("Ok.")],
                           seen=[])  # fmt: skip
    pii = PIIMiddleware("email", strategy="redact", apply_to_output=True)
    agent = create_agent(model, middleware=[pii, TokenleanMemoryMiddleware(memory, budget=300)],
                         checkpointer=InMemorySaver())  # fmt: skip
    _run(agent, "Who do I write to?", "pii", mode)
    _run(agent, "Thanks.", "pii", mode)
    stored = [t.content for t in memory.turns("pii")]
    assert len(stored) == 4
    assert "ada@example.com" not in " ".join(stored)
    assert stored[1] != "Write to ada@example.com."


@pytest.mark.parametrize("mode", MODES)
def test_a_run_interrupted_for_approval_records_its_tool_call_once_resumed(mode: str) -> None:
    """A human-in-the-loop interrupt returns before the run ends; once resumed, the transcript
    holds the tool call, its result and the reply once each."""
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.types import Command

    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[_lookup("1234", "call-1"), AIMessage("It left Lyon.")],
                           seen=[])  # fmt: skip
    approval = HumanInTheLoopMiddleware(interrupt_on={"lookup_order": True})
    agent = create_agent(model, tools=[lookup_order],
                         middleware=[TokenleanMemoryMiddleware(memory, budget=600), approval],
                         checkpointer=InMemorySaver())  # fmt: skip
    state = _run(agent, "Where is order 1234?", "approve", mode)
    assert "__interrupt__" in state
    assert _shown(memory.turns("approve")) == ["user: Where is order 1234?"]
    resume = Command(resume={"decisions": [{"type": "approve"}]})
    config = {"configurable": {"thread_id": "approve"}}
    if mode == "ainvoke":
        state = asyncio.run(agent.ainvoke(resume, config))
    else:
        state = agent.invoke(resume, config)
    turns = memory.turns("approve")
    assert [t.role for t in turns] == ["user", "assistant", "tool", "assistant"]
    assert [t.id for t in turns] == [m.id for m in state["messages"]]


@tool
def dump_log(order: str) -> str:
    """Dump the full log of an order."""
    return " ".join(f"event{i} for {order}" for i in range(300))


def test_a_tool_result_the_budget_cannot_hold_is_refused_not_dropped() -> None:
    """The call after a tool result continues the current turn: when the budget cannot hold it
    (the user turn, the call, the result), the model is not called with the system prompt alone."""
    from tokenlean import ConfigurationError

    memory = ConversationMemory(embedder=HashingEmbedder(64))
    call = AIMessage("", tool_calls=[{"name": "dump_log", "args": {"order": "1"}, "id": "c1"}])
    model = RecordingModel(responses=[call, AIMessage("done")], seen=[])
    agent = create_agent(model, tools=[dump_log],
                         middleware=[TokenleanMemoryMiddleware(memory, budget=600)],
                         checkpointer=InMemorySaver())  # fmt: skip
    with pytest.raises(ConfigurationError, match="cannot hold the current turn"):
        _run(agent, "Show the log of order 1.", "big", "invoke")
    assert len(model.seen) == 1  # the first call only
    assert [t.role for t in memory.turns("big")] == ["user", "assistant", "tool"]  # all kept


@pytest.mark.parametrize("checkpointer", [True, False])
def test_a_store_failing_at_the_end_of_a_run_neither_fails_it_nor_loses_the_turns(
    checkpointer: bool,
) -> None:
    """The disk fills up while the model answers: the run returns its (paid) answer, and the
    thread's next run records what the failed write left out, in order, with or without a
    checkpointer (the middleware holds it)."""
    store = FaultyTranscriptStore()

    class FillsTheDisk(RecordingModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
            if len(self.seen) == 1:  # while answering the second question
                store.writes_down = True
            return super()._generate(messages, *args, **kwargs)

    memory = ConversationMemory(store, embedder=HashingEmbedder(64))
    model = FillsTheDisk(responses=[AIMessage("one"), AIMessage("two"), AIMessage("three")],
                         seen=[])  # fmt: skip
    middleware = TokenleanMemoryMiddleware(memory, budget=600, session="t")
    agent = create_agent(model, middleware=[middleware],
                         checkpointer=InMemorySaver() if checkpointer else None)  # fmt: skip
    _run(agent, "first", "t", "invoke")
    assert _run(agent, "second", "t", "invoke")["messages"][-1].content == "two"  # answered
    assert [t.content for t in memory.turns("t")] == ["first", "one", "second"]
    store.writes_down = False  # the store answers again
    _run(agent, "third", "t", "invoke")
    expected = ["first", "one", "second", "two", "third", "three"]
    assert [t.content for t in memory.turns("t")] == expected
