"""tokenlean context memory for LangChain: a chat message history, and the message conversions.

The agent middleware, which needs LangChain's agents (the ``agents`` extra), is in
``langchain_tokenlean.middleware``; this module needs only ``langchain-core``.

``TokenleanChatMessageHistory`` is a ``BaseChatMessageHistory`` for plain LCEL chains
(``RunnableWithMessageHistory``): ``messages`` is the budgeted context, ``add_messages`` appends
to the raw transcript.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_tokenlean.cache import text_completion
from tokenlean import ConversationMemory, PromptSummarizer, check_budget, normalize_role

__all__ = [
    "TokenleanChatMessageHistory",
    "to_langchain",
    "to_langchain_tool_call",
    "to_openai_tool_call",
    "to_tokenlean",
]


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _role(message: BaseMessage) -> str:
    kind = message.role if isinstance(message, ChatMessage) else message.type
    role = normalize_role(kind)
    return role if role in _ROLES else "user"


def to_openai_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """A LangChain tool call (``name``, ``args``, ``id``) in the OpenAI shape a provider
    receives, so that its tokens are counted as the provider will bill them."""
    if "function" in call:  # already in the OpenAI shape
        return dict(call)
    return {
        "id": call.get("id") or "",
        "type": "function",
        "function": {
            "name": call.get("name", ""),
            "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False),
        },
    }


def to_langchain_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped tool call (or a LangChain one, as earlier versions stored) as
    LangChain's ``{"name", "args", "id", "type": "tool_call"}``."""
    function = call.get("function")
    if not isinstance(function, Mapping):
        return {"name": call.get("name", ""), "args": dict(call.get("args") or {}),
                "id": call.get("id"), "type": "tool_call"}  # fmt: skip
    try:
        args = json.loads(function.get("arguments") or "{}")
    except ValueError:
        args = {}
    return {
        "name": function.get("name", ""),
        "args": args if isinstance(args, dict) else {},
        "id": call.get("id"),
        "type": "tool_call",
    }


def to_tokenlean(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a tokenlean message: the role (tokenlean's one role map), the
    text, the id, and tool calls in the provider's (OpenAI) shape."""
    data: dict[str, Any] = {"role": _role(message), "content": message.text}
    if message.id:
        data["id"] = message.id
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [to_openai_tool_call(call) for call in message.tool_calls]
    if isinstance(message, ToolMessage):
        data["tool_call_id"] = message.tool_call_id
    if message.name:
        data["speaker"] = message.name
    return data


def to_langchain(message: dict[str, Any]) -> BaseMessage:
    """A tokenlean message (from a :class:`ContextPack`) as a LangChain message."""
    role, content = message["role"], message.get("content") or ""
    if role == "system":
        return SystemMessage(content)
    if role == "assistant":
        calls = [to_langchain_tool_call(call) for call in message.get("tool_calls") or []]
        return AIMessage(content, tool_calls=calls)
    if role == "tool":
        return ToolMessage(content, tool_call_id=message["tool_call_id"])
    return HumanMessage(content, name=message.get("name"))


class TokenleanChatMessageHistory(BaseChatMessageHistory):
    """A chat history whose ``messages`` are the budgeted context of the session.

    ``clear()`` starts a new session segment: the old turns stay in the store (the raw
    transcript is never destroyed) but no longer reach the model.
    """

    def __init__(
        self,
        memory: ConversationMemory | str,
        session: str,
        *,
        budget: int = 2000,
        tenant: str = "default",
        system: str | None = None,
    ) -> None:
        # A transcript store URI (sqlite:///path, redis://host/db): replicas share conversations.
        self.memory = ConversationMemory(memory) if isinstance(memory, str) else memory
        self.base_session = session
        self.budget = check_budget(budget)  # when built, not at the first model call
        self.tenant = tenant
        self.system = system

    @property
    def session(self) -> str:
        return self.memory.segment(self.base_session, tenant=self.tenant)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        if not self.memory.count(self.session, tenant=self.tenant):
            return []
        pack = self.memory.context(
            self.session, budget=self.budget, tenant=self.tenant, system=self.system
        )
        return [to_langchain(m) for m in pack.messages]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.memory.add(self.session, [to_tokenlean(m) for m in messages], tenant=self.tenant)

    def clear(self) -> None:
        self.memory.new_segment(self.base_session, tenant=self.tenant)


class LangChainSummarizer(PromptSummarizer):
    """A tokenlean summarizer backed by any LangChain chat model (see
    :class:`~tokenlean.PromptSummarizer`: one new item per update, sourced from its turns)."""

    def __init__(self, model: Any, *, prompt: str | None = None) -> None:
        super().__init__(text_completion(model), prompt=prompt)
        self.model = model


class LangChainSlotExtractor:
    """Fills slots with an LLM's structured output.

    Pass a runnable that returns the slot model (or a dict), typically
    ``chat_model.with_structured_output(MySlots)``. Each user turn is sent with the prompt; the
    fields the model sets (not None) become slot updates, validated by the memory's slot model.
    """

    PROMPT = (
        "Extract the following facts from the user's message if it states them; leave a field "
        "empty otherwise.\n\nMessage: {text}"
    )

    def __init__(self, structured: Any, *, roles: Sequence[str] = ("user",),
                 prompt: str | None = None) -> None:  # fmt: skip
        self.structured = structured
        self.roles = tuple(roles)
        self.prompt = prompt or self.PROMPT

    def extract(self, turn: Any) -> dict[str, Any]:
        if turn.role not in self.roles or not turn.content:
            return {}
        result = self.structured.invoke(self.prompt.format(text=turn.content))
        values = result.model_dump() if hasattr(result, "model_dump") else dict(result or {})
        return {name: value for name, value in values.items() if value is not None}
