"""The memory middleware for create_agent, and the chat message history for LCEL chains."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_tokenlean import TokenleanChatMessageHistory, TokenleanMemoryMiddleware
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from tokenlean import ConfigurationError, ConversationMemory, count_message_tokens
from tokenlean.testing import HashingEmbedder


class RecordingModel(FakeMessagesListChatModel):
    """A fake chat model that records the messages of every call."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _tokens(messages: list[BaseMessage]) -> int:
    roles = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
    return count_message_tokens(
        [{"role": roles[m.type], "content": m.text} for m in messages]
    ).total


def test_the_agent_model_sees_a_budgeted_context_while_the_checkpointer_keeps_everything() -> None:
    """Over a long thread, each model call fits the budget; the thread state holds every turn."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    replies = [
        AIMessage(f"Answer number {i}, with some detail about orders and refunds.")
        for i in range(30)
    ]
    model = RecordingModel(responses=replies, seen=[])
    packs = []
    middleware = TokenleanMemoryMiddleware(memory, budget=300, on_pack=packs.append)
    agent = create_agent(model, system_prompt="You are the support agent.",
                         middleware=[middleware], checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "customer-42"}}
    for i in range(25):
        agent.invoke(
            {"messages": [HumanMessage(f"Question {i}: where is order {1000 + i} now?")]}, config
        )
    state = agent.get_state(config).values["messages"]
    assert len(state) == 50  # the checkpointer keeps the full history
    assert len(memory.turns("customer-42")) == 50  # the last answer too, when invoke returns
    last = model.seen[-1]
    assert _tokens(last) <= 300
    assert _tokens(last) < _tokens(state)
    assert last[-1].text == "Question 24: where is order 1024 now?"
    assert last[0].type == "system"
    assert "support agent" in last[0].text
    assert all(p.tokens <= 300 for p in packs)


def test_the_middleware_works_with_ainvoke() -> None:
    """The async path rewrites the request the same way."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[AIMessage(f"ok {i}") for i in range(5)], seen=[])
    agent = create_agent(model, middleware=[TokenleanMemoryMiddleware(memory, budget=200)],
                         checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "t"}}
    for i in range(3):
        asyncio.run(agent.ainvoke({"messages": [HumanMessage(f"hello {i}")]}, config))
    assert model.seen[-1][-1].text == "hello 2"
    assert len(memory.turns("t")) == 6  # three questions, three answers


def test_the_chat_history_returns_the_budgeted_context() -> None:
    """messages is the compressed view; the raw transcript keeps every turn; clear starts afresh."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    history = TokenleanChatMessageHistory(memory, "lcel", budget=150, system="Be brief.")
    for i in range(20):
        history.add_messages([HumanMessage(f"Message {i} about invoices and refunds."),
                              AIMessage(f"Reply {i} about invoices and refunds.")])  # fmt: skip
    messages = history.messages
    assert _tokens(messages) <= 150
    assert messages[0].type == "system"
    assert len(memory.turns("lcel")) == 40
    history.clear()
    assert history.messages == []
    assert len(memory.turns("lcel")) == 40  # nothing destroyed


def test_an_llm_summarizer_adds_one_sourced_item_per_update() -> None:
    """The LangChain-backed summarizer summarizes only new turns and keeps earlier items."""
    from langchain_core.language_models import FakeListChatModel
    from langchain_tokenlean import LangChainSummarizer

    model = FakeListChatModel(responses=["First part: invoices.", "Second part: refunds."])
    memory = ConversationMemory(embedder=HashingEmbedder(64), summarizer=LangChainSummarizer(model),
                                summarize_after=30, keep_recent=2)  # fmt: skip
    for i in range(8):
        memory.add("s", [{"role": "user", "content": f"A long question number {i} about invoices"}])
    items = memory.summary("s").items
    assert items[0].text == "First part: invoices."
    assert all(items[0].sources)
    # A budget that cannot hold every turn the item summarizes (one that holds them all leaves
    # the item out: it would say them twice).
    pack = memory.context("s", budget=100, user="what about invoices?")
    assert "First part: invoices." in pack.messages[0]["content"]


def test_an_llm_slot_extractor_fills_and_validates_slots() -> None:
    """Structured output becomes slot updates; an invalid value is rejected with a clear error."""
    import pytest
    from langchain_core.runnables import RunnableLambda
    from langchain_tokenlean import LangChainSlotExtractor
    from pydantic import BaseModel

    from tokenlean import InvalidInputError

    class Trip(BaseModel):
        city: str | None = None
        nights: int | None = None

    def fake_structured_output(prompt: str) -> Trip:  # stands in for model.with_structured_output
        if "Lisbon" in prompt:
            return Trip(city="Lisbon", nights=3)
        if "Porto" in prompt:
            return Trip(city="Porto")
        return Trip()

    extractor = LangChainSlotExtractor(RunnableLambda(fake_structured_output))
    memory = ConversationMemory(embedder=HashingEmbedder(64), slots=Trip, extractors=[extractor])
    memory.add("s", [{"role": "user", "content": "Three nights in Lisbon please."}])
    memory.add("s", [{"role": "user", "content": "Change of plan: Porto."}])
    slots = memory.slots("s")
    assert (slots.current.city, slots.current.nights) == ("Porto", 3)
    assert [c.new for c in slots.history if c.slot == "city"] == ["Lisbon", "Porto"]
    with pytest.raises(InvalidInputError):
        memory.set_slots("s", {"nights": "many"})


def test_the_middleware_refuses_runs_without_a_conversation_and_records_each_message_once() -> None:
    """No thread_id and no session: a clear error; a system message in the input is not stored."""
    import pytest
    from langchain_core.messages import SystemMessage

    from tokenlean import ConfigurationError

    memory = ConversationMemory(embedder=HashingEmbedder(64))
    model = RecordingModel(responses=[AIMessage(f"ok {i}") for i in range(4)], seen=[])
    agent = create_agent(model, middleware=[TokenleanMemoryMiddleware(memory, budget=300)])
    with pytest.raises(ConfigurationError, match="thread_id"):
        agent.invoke({"messages": [HumanMessage("hi")]})
    agent = create_agent(model, middleware=[TokenleanMemoryMiddleware(memory, budget=300)],
                         checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "t"}}
    agent.invoke({"messages": [SystemMessage("Be brief."), HumanMessage("I am Ada")]}, config)
    agent.invoke({"messages": [HumanMessage("who am I?")]}, config)
    assert [t.content for t in memory.turns("t")] == ["I am Ada", "ok 0", "who am I?", "ok 1"]


class ToolCallingModel(FakeMessagesListChatModel):
    """A fake chat model that binds tools and records what every call receives."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)
    bound: list[Any] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        self.bound = list(tools)
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _received(messages: list[BaseMessage], tools: list[Any]) -> int:
    """Prompt tokens of a call as the provider receives it: messages (tool calls in the OpenAI
    shape) and the tool schemas."""
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from langchain_tokenlean.memory import to_tokenlean

    shaped = []
    for message in messages:
        data = to_tokenlean(message)
        data.pop("id", None)
        shaped.append(data)
    schemas = [convert_to_openai_tool(tool) for tool in tools]
    return count_message_tokens(shaped, tools=schemas).total


def _tool_run() -> tuple[Any, ToolCallingModel]:
    """A tool with long results, and a model scripted for 20 turns of one tool call (with long
    arguments) and an answer each."""
    from langchain_core.tools import tool

    @tool
    def lookup_order(order: str, note: str) -> str:
        """Look an order up in the warehouse system, with a note for the warehouse team."""
        return f"Order {order} left the Lyon warehouse this morning and is on its way. " * 3

    replies: list[AIMessage] = []
    for i in range(20):
        args = {"order": str(1000 + i), "note": "customer asked twice, please hurry " * 6}
        replies.append(AIMessage("", tool_calls=[{"name": "lookup_order", "args": args,
                                                  "id": f"call-{i}"}]))  # fmt: skip
        replies.append(AIMessage(f"Order {1000 + i} is on its way from Lyon."))
    return lookup_order, ToolCallingModel(responses=replies, seen=[])


def test_a_tool_using_agent_never_receives_more_than_the_budget() -> None:
    """20 turns, each a tool call with long arguments, its result and an answer: every model call
    receives at most the budget, tool schemas and the current turn's tool exchange included."""
    lookup_order, model = _tool_run()
    budget = 600
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    agent = create_agent(model, tools=[lookup_order], system_prompt="You are the support agent.",
                         middleware=[TokenleanMemoryMiddleware(memory, budget=budget)],
                         checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "tools"}}
    for i in range(20):
        agent.invoke({"messages": [HumanMessage(f"Where is order {1000 + i}?")]}, config)
    assert len(model.seen) == 40
    received = [_received(messages, model.bound) for messages in model.seen]
    assert max(received) <= budget, received
    assert received[-1] > budget // 2  # the budget is used, not just respected


def test_a_tool_using_agent_receives_the_system_prompt_as_a_byte_identical_first_block() -> None:
    """20 turns with tools: on every model call the system message's first content block is the
    system prompt alone, byte-identical, carrying the cache marker; what changes (retrieved
    turns) follows in a block of its own; and the budget still holds."""
    from langchain_core.messages import SystemMessage

    lookup_order, model = _tool_run()
    budget, system = 600, "You are the support agent of Northwind. Answer in one sentence."
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    middleware = TokenleanMemoryMiddleware(memory, budget=budget,
                                           cache_control={"type": "ephemeral"})  # fmt: skip
    agent = create_agent(model, tools=[lookup_order], system_prompt=system,
                         middleware=[middleware], checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "prefix"}}
    for i in range(20):
        agent.invoke({"messages": [HumanMessage(f"Where is order {1000 + i}?")]}, config)
    assert len(model.seen) == 40
    firsts = [messages[0] for messages in model.seen]
    assert all(isinstance(m, SystemMessage) and isinstance(m.content, list) for m in firsts)
    blocks = [m.content[0] for m in firsts]
    assert blocks == [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}] * 40
    changing = {str(m.content[1:]) for m in firsts}
    assert len(changing) > 10  # the rest of the system message changes from call to call
    received = [_received(messages, model.bound) for messages in model.seen]
    assert max(received) <= budget, received


def test_a_budget_that_is_not_a_positive_whole_number_is_refused_when_built() -> None:
    """The middleware and the chat history check their budget at construction, not at the
    agent's first model call."""
    memory = ConversationMemory(embedder=HashingEmbedder(32))
    for budget in ("300", 0, -5, 2.5, True):
        with pytest.raises(ConfigurationError, match="positive whole number"):
            TokenleanMemoryMiddleware(memory, budget=budget)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="positive whole number"):
            TokenleanChatMessageHistory(memory, "s", budget=budget)  # type: ignore[arg-type]


def test_a_budget_too_small_once_the_tool_schemas_are_counted_says_so() -> None:
    """The error names the budget the user set and the tokens the tool schemas took from it."""
    lookup_order, model = _tool_run()
    memory = ConversationMemory(embedder=HashingEmbedder(32))
    policy = "You are the support agent. " * 20
    agent = create_agent(model, tools=[lookup_order], system_prompt=policy,
                         middleware=[TokenleanMemoryMiddleware(memory, budget=150)],
                         checkpointer=InMemorySaver())  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"budget 150, less \d+ tokens of tool schemas"):
        agent.invoke({"messages": [HumanMessage("Where is order 1000?")]},
                     {"configurable": {"thread_id": "small"}})  # fmt: skip
