"""TokenleanMemory: a LlamaIndex BaseMemory for agents and chat engines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.memory.tokenlean import TokenleanMemory

from tokenlean import ConversationMemory, count_message_tokens
from tokenlean.testing import FaultyTranscriptStore, HashingEmbedder


def _tokens(messages: list[ChatMessage]) -> int:
    return count_message_tokens(
        [{"role": m.role.value, "content": m.content or ""} for m in messages]
    ).total


class FakeFunctionLLM(FunctionCallingLLM):
    """A fake function-calling LLM that answers 'ok N' and never calls tools."""

    calls: int = 0
    seen: list[list[ChatMessage]] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_function_calling_model=True, is_chat_model=True)

    def _reply(self, messages: Any) -> ChatResponse:
        self.seen.append(list(messages))
        self.calls += 1
        return ChatResponse(message=ChatMessage(role="assistant", content=f"ok {self.calls}"))

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._reply(messages)

    def stream_chat(self, messages: Any, **kwargs: Any) -> Any:
        reply = self._reply(messages)
        return iter([ChatResponse(message=reply.message, delta=reply.message.content)])

    async def astream_chat(self, messages: Any, **kwargs: Any) -> Any:
        reply = self._reply(messages)

        async def gen() -> Any:
            yield ChatResponse(message=reply.message, delta=reply.message.content)

        return gen()

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok")

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        return CompletionResponse(text="ok")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        return iter([CompletionResponse(text="ok", delta="ok")])

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        async def gen() -> Any:
            yield CompletionResponse(text="ok", delta="ok")

        return gen()

    def _prepare_chat_with_tools(self, tools: Any, user_msg: Any = None, chat_history: Any = None,
                                 **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                user_msg
                if isinstance(user_msg, ChatMessage)
                else ChatMessage(role="user", content=str(user_msg))
            )
        return {"messages": messages}

    def get_tool_calls_from_response(self, response: Any, error_on_no_tool_call: bool = False,
                                     **kwargs: Any) -> list[Any]:  # fmt: skip
        return []


def make(**kwargs: Any) -> TokenleanMemory:
    return TokenleanMemory(ConversationMemory(embedder=HashingEmbedder(64)), **kwargs)


def test_get_returns_a_budgeted_context_and_get_all_everything() -> None:
    """After a long exchange, get() fits the budget; get_all() has every turn."""
    memory = make(session="s", token_limit=200, system="You are the support agent.")
    for i in range(30):
        memory.put(
            ChatMessage(role="user", content=f"Question {i} about invoices for order {1000 + i}")
        )
        memory.put(ChatMessage(role="assistant", content=f"Answer {i}: invoices are monthly."))
    context = memory.get()
    assert _tokens(context) <= 200
    assert context[0].role.value == "system"
    assert len(memory.get_all()) == 60
    with_input = memory.get(input="invoices for order 1003?")
    assert with_input[-1].content != "invoices for order 1003?"


def test_async_methods_set_and_reset() -> None:
    """aput_messages / aget / aset work; set continuing the history appends; reset keeps the
    stored turns."""
    memory = make(session="a", token_limit=300)

    async def run() -> list[ChatMessage]:
        await memory.aput_messages([ChatMessage(role="user", content="hi"),
                                    ChatMessage(role="assistant", content="hello")])  # fmt: skip
        await memory.aset([*memory.get_all(), ChatMessage(role="user", content="again")])
        return await memory.aget()

    messages = asyncio.run(run())
    assert [m.content for m in messages] == ["hi", "hello", "again"]
    memory.reset()
    assert memory.get() == []
    assert len(memory.memory.turns("a")) == 3


def test_set_with_another_history_replaces_what_the_model_sees() -> None:
    """As LlamaIndex's own memories do: set([...]) with a history that does not continue the
    stored one (a chat engine's chat_history=) makes it the conversation; the earlier turns
    stay in the transcript, in an earlier segment."""
    memory = make(session="b", token_limit=300)
    memory.set([ChatMessage(role="user", content="old question"),
                ChatMessage(role="assistant", content="old answer")])  # fmt: skip
    memory.set([ChatMessage(role="user", content="only this")])
    assert [m.content for m in memory.get_all()] == ["only this"]
    assert [m.content for m in memory.get()] == ["only this"]
    assert [t.content for t in memory.memory.turns("b")] == ["old question", "old answer"]
    memory.set([*memory.get_all(), ChatMessage(role="assistant", content="noted")])
    assert [m.content for m in memory.get_all()] == ["only this", "noted"]


def test_a_tool_message_without_its_call_id_is_refused_like_the_cores() -> None:
    """A tool result answering no call is a MalformedRequestError, and nothing is stored."""
    from tokenlean import MalformedRequestError

    memory = make(session="c", token_limit=300)
    with pytest.raises(MalformedRequestError, match="tool_call_id"):
        memory.put_messages([ChatMessage(role="user", content="hi"),
                             ChatMessage(role="tool", content="42")])  # fmt: skip
    assert memory.get_all() == []


def test_a_chat_engine_and_a_function_agent_use_it() -> None:
    """SimpleChatEngine and FunctionAgent run with the memory and record every turn."""
    memory = make(session="engine", token_limit=300)
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=5), memory=memory)
    for i in range(3):
        engine.chat(f"tell me about order {i}")
    assert len(memory.get_all()) == 6

    agent_memory = make(session="agent", token_limit=300)
    llm = FakeFunctionLLM()
    agent = FunctionAgent(tools=[], llm=llm, system_prompt="Be brief.")

    async def run() -> None:
        for i in range(2):
            await agent.run(user_msg=f"question {i}", memory=agent_memory)

    asyncio.run(run())
    assert [m.role.value for m in agent_memory.get_all()] == ["user", "assistant"] * 2
    assert llm.seen[-1][-1].content == "question 1"


def test_it_serializes_and_reopens_its_sqlite_transcript(tmp_path: Path) -> None:
    """to_dict/from_dict keep the settings; with store_path the turns come back."""
    path = str(tmp_path / "memory.db")
    memory = TokenleanMemory(session="p", token_limit=500, store_path=path)
    memory.memory._embedder = HashingEmbedder(64)
    memory.put(ChatMessage(role="user", content="remember order 4242"))
    data = memory.to_dict()
    assert data["store_path"] == path
    restored = TokenleanMemory.from_dict(data)
    assert [m.content for m in restored.get_all()] == ["remember order 4242"]


def test_an_llm_summarizer_backed_by_a_llamaindex_llm() -> None:
    """LlamaIndexSummarizer turns new turns into one sourced summary item."""
    from llama_index.memory.tokenlean import LlamaIndexSummarizer

    summarizer = LlamaIndexSummarizer(MockLLM(max_tokens=6))
    memory = ConversationMemory(embedder=HashingEmbedder(64), summarizer=summarizer,
                                summarize_after=30, keep_recent=2)  # fmt: skip
    for i in range(8):
        memory.add("s", [{"role": "user", "content": f"A long question number {i} about invoices"}])
    items = memory.summary("s").items
    assert items
    assert items[0].text == "text text text text text text"  # MockLLM's reply
    assert items[0].sources == tuple(f"t{i}" for i in range(len(items[0].sources)))


def test_tool_calls_survive_the_memory() -> None:
    """An assistant tool call and its result come back from get() together, calls included."""
    memory = make(session="tools", token_limit=500)
    call = {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
    memory.put(ChatMessage(role="user", content="where is order 1234?"))
    memory.put(ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]}))
    memory.put(
        ChatMessage(role="tool", content="In Lyon", additional_kwargs={"tool_call_id": "c1"})
    )
    messages = memory.get()
    assistant = next(m for m in messages if m.role.value == "assistant")
    assert assistant.additional_kwargs["tool_calls"][0]["id"] == "c1"
    assert messages[-1].additional_kwargs["tool_call_id"] == "c1"


def test_budget_is_a_deprecated_alias_of_token_limit() -> None:
    with pytest.warns(DeprecationWarning, match="token_limit"):
        memory = make(session="old", budget=321)
    assert memory.token_limit == memory.budget == 321


def _agent_reply(messages: Any, number: int) -> Any:
    """The scripted function-calling LLM of the agent tests: a tool call with long arguments,
    then, once the tool answered, the answer."""
    from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock

    if messages[-1].role.value == "tool":
        return ChatMessage(role="assistant", content="It is on its way from Lyon.")
    arguments = {"order": "1234", "note": "customer asked twice, please hurry " * 6}
    call = ToolCallBlock(tool_call_id=f"call-{number}", tool_name="lookup_order",
                         tool_kwargs=arguments)  # fmt: skip
    return ChatMessage(role="assistant", blocks=[call])


def test_a_function_agent_with_tools_never_receives_more_than_the_token_limit() -> None:
    """20 turns of a TokenleanFunctionAgent, each a tool call with long arguments, its result and
    an answer: every LLM call (system prompt, memory, the turn's tool exchange and the tool
    schemas) stays within token_limit."""
    import asyncio

    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.tools import FunctionTool
    from llama_index.memory.tokenlean import TokenleanFunctionAgent, to_tokenlean

    from tokenlean import count_message_tokens

    def lookup_order(order: str = "1000", note: str = "hurry " * 20) -> str:
        """Look an order up in the warehouse system, with a note for the warehouse team."""
        return f"Order {order} left the Lyon warehouse this morning and is on its way. " * 3

    tool = FunctionTool.from_defaults(lookup_order)
    schema = tool.metadata.to_openai_tool(skip_length_check=True)
    received: list[int] = []

    def respond(messages: Any, **kwargs: Any) -> ChatMessage:
        shaped = [to_tokenlean(m) for m in messages]
        received.append(count_message_tokens(shaped, tools=[schema]).total)
        return _agent_reply(messages, len(received))

    limit = 700
    memory = make(session="agent-tools", token_limit=limit)
    agent = TokenleanFunctionAgent(
        tools=[tool], llm=MockFunctionCallingLLM(response_generator=respond),
        system_prompt="You are the support agent.", streaming=False,
    )  # fmt: skip

    async def run() -> None:
        for i in range(20):
            await agent.run(f"Where is order {1000 + i}?", memory=memory)

    asyncio.run(run())
    assert len(received) == 40
    assert max(received) <= limit, received
    assert received[-1] > limit // 2


@pytest.mark.parametrize("given_to", ["memory", "agent"])
def test_a_function_agent_with_tools_receives_a_byte_identical_static_prefix(given_to: str) -> None:
    """20 turns of a TokenleanFunctionAgent with tools: on every LLM call the first message's
    first block is the system prompt alone (given to the memory or to the agent), byte-identical
    and followed by a CachePoint; what changes comes after it; token_limit still holds."""
    from llama_index.core.base.llms.types import CachePoint, TextBlock
    from llama_index.core.llms.mock import MockFunctionCallingLLM
    from llama_index.core.tools import FunctionTool
    from llama_index.memory.tokenlean import TokenleanFunctionAgent, to_tokenlean

    def lookup_order(order: str = "1000", note: str = "hurry " * 20) -> str:
        """Look an order up in the warehouse system, with a note for the warehouse team."""
        return f"Order {order} left the Lyon warehouse this morning and is on its way. " * 3

    tool = FunctionTool.from_defaults(lookup_order)
    schema = tool.metadata.to_openai_tool(skip_length_check=True)
    system = "You are the support agent of Northwind. Answer in one sentence."
    seen: list[list[ChatMessage]] = []
    received: list[int] = []

    def respond(messages: Any, **kwargs: Any) -> ChatMessage:
        seen.append(list(messages))
        received.append(count_message_tokens([to_tokenlean(m) for m in messages],
                                             tools=[schema]).total)  # fmt: skip
        return _agent_reply(messages, len(received))

    limit = 700
    on_memory = given_to == "memory"
    memory = make(session=f"prefix-{given_to}", token_limit=limit, cache_point=True,
                  system=system if on_memory else None)  # fmt: skip
    agent = TokenleanFunctionAgent(
        tools=[tool], llm=MockFunctionCallingLLM(response_generator=respond),
        system_prompt=None if on_memory else system, streaming=False,
    )  # fmt: skip

    async def run() -> None:
        for i in range(20):
            await agent.run(f"Where is order {1000 + i}?", memory=memory)

    asyncio.run(run())
    assert len(seen) == 40
    for messages in seen:
        first = messages[0]
        assert first.role.value == "system"
        assert isinstance(first.blocks[0], TextBlock)
        assert first.blocks[0].text == system
        assert isinstance(first.blocks[1], CachePoint)
    changing = {str([m.content for m in messages[1:]]) for messages in seen}
    if on_memory:
        changing = {str(messages[0].blocks[2:]) for messages in seen}
    assert len(changing) > 10
    assert max(received) <= limit, received


@pytest.mark.parametrize("limit", [0, -1, 2.5, None, "2000", True])
def test_a_token_limit_that_is_not_a_positive_whole_number_is_refused_like_the_cores(
    limit: Any,
) -> None:
    from tokenlean import ConfigurationError

    with pytest.raises(ConfigurationError, match="positive whole number of tokens"):
        TokenleanMemory(session="limit", token_limit=limit)


def test_a_store_failing_after_the_answer_neither_fails_the_chat_nor_loses_the_turns() -> None:
    """The disk fills up while the model answers: the chat still returns its (paid) answer, the
    messages are held in the process and written, in order, once the store answers again."""
    from llama_index.core.chat_engine import SimpleChatEngine

    store = FaultyTranscriptStore()

    class FillsTheDisk(MockLLM):
        def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
            if messages[-1].content == "second question":
                store.writes_down = True  # while the model answers
            return super().chat(messages, **kwargs)

    memory = TokenleanMemory(ConversationMemory(store, embedder=HashingEmbedder(64)),
                             session="s", token_limit=2000)  # fmt: skip
    engine = SimpleChatEngine.from_defaults(llm=FillsTheDisk(max_tokens=3), memory=memory)
    engine.chat("first question")
    assert str(engine.chat("second question"))  # answered
    assert memory.pending == 1  # the reply
    store.writes_down = False
    engine.chat("third question")
    assert memory.pending == 0
    turns = memory.memory.turns("s")
    assert [t.role for t in turns] == ["user", "assistant"] * 3
    assert [t.content for t in turns if t.role == "user"] == [
        "first question",
        "second question",
        "third question",
    ]


def test_held_messages_keep_their_segment_and_a_malformed_one_is_refused_not_held() -> None:
    from tokenlean import MalformedRequestError

    store = FaultyTranscriptStore()
    memory = TokenleanMemory(ConversationMemory(store, embedder=HashingEmbedder(64)),
                             session="s", token_limit=2000)  # fmt: skip
    memory.put(ChatMessage(role="user", content="old question"))
    store.writes_down = True
    memory.put(ChatMessage(role="assistant", content="old answer"))
    with pytest.raises(MalformedRequestError):  # a tool message without its call id
        memory.put(ChatMessage(role="tool", content="result"))
    assert memory.pending == 1
    store.writes_down = False
    memory.reset()
    memory.put(ChatMessage(role="user", content="new question"))
    assert [m.content for m in memory.get_all()] == ["new question"]
    assert [t.content for t in memory.memory.turns("s")] == ["old question", "old answer"]


def test_with_the_store_down_a_held_message_goes_to_the_segment_it_was_put_in() -> None:
    store = FaultyTranscriptStore()
    core = ConversationMemory(store, embedder=HashingEmbedder(64))
    memory = TokenleanMemory(core, session="s", token_limit=2000)
    memory.put(ChatMessage(role="user", content="old question"))
    memory.reset()
    store.down = True
    memory.put(ChatMessage(role="user", content="new question"))  # held, segment unreadable
    store.down = False
    assert [m.content for m in memory.get()] == ["new question"]
    assert [t.content for t in core.turns("s")] == ["old question"]


def test_a_context_is_not_built_without_the_held_messages() -> None:
    """Writes fail, reads work: get() raises rather than send the model a context without the
    question it holds (nothing is paid yet); the question is written once the store answers."""
    from tokenlean import StoreBackendError

    store = FaultyTranscriptStore()
    memory = TokenleanMemory(ConversationMemory(store, embedder=HashingEmbedder(64)),
                             session="s", token_limit=2000)  # fmt: skip
    store.writes_down = True
    memory.put(ChatMessage(role="user", content="the question"))
    with pytest.raises(StoreBackendError):
        memory.get()
    store.writes_down = False
    assert [m.content for m in memory.get()] == ["the question"]


def test_a_held_message_the_store_refuses_is_dropped_not_blocking_the_memory() -> None:
    from tokenlean import InvalidInputError

    class Picky(FaultyTranscriptStore):
        def append(self, tenant: str, session: str, turns: Any) -> Any:
            if not self.writes_down and any("poison" in t.content for t in turns):
                raise InvalidInputError("the store refuses this text")
            return super().append(tenant, session, turns)

    store = Picky()
    store.writes_down = True
    memory = TokenleanMemory(ConversationMemory(store, embedder=HashingEmbedder(64)),
                             session="s", token_limit=2000)  # fmt: skip
    memory.put(ChatMessage(role="user", content="poison"))  # held
    store.writes_down = False
    memory.put(ChatMessage(role="user", content="good question"))
    assert memory.pending == 0
    assert [m.content for m in memory.get_all()] == ["good question"]
