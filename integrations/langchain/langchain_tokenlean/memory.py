"""tokenlean context memory for LangChain: an agent middleware and a chat message history.

``TokenleanMemoryMiddleware`` plugs into ``create_agent``: before each model call it records the
conversation's new messages in a :class:`~tokenlean.ConversationMemory` (keyed by the run's
``thread_id``) and replaces the request's messages with the memory's budgeted
:class:`~tokenlean.ContextPack`. The agent's checkpointer still keeps the full history; only
what reaches the model is compressed.

``TokenleanChatMessageHistory`` is a ``BaseChatMessageHistory`` for plain LCEL chains
(``RunnableWithMessageHistory``): ``messages`` is the budgeted context, ``add_messages`` appends
to the raw transcript.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_tokenlean.cache import ROLES, text_completion
from tokenlean import ConfigurationError, ContextPack, ConversationMemory, PromptSummarizer

__all__ = [
    "TokenleanChatMessageHistory",
    "TokenleanMemoryMiddleware",
    "to_langchain",
    "to_tokenlean",
]


def to_tokenlean(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a tokenlean message (text content, tool calls, ids)."""
    data: dict[str, Any] = {"role": ROLES.get(message.type, "user"), "content": message.text}
    if message.id:
        data["id"] = message.id
    if isinstance(message, AIMessage) and message.tool_calls:
        data["tool_calls"] = [dict(call) for call in message.tool_calls]
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
        return AIMessage(content, tool_calls=list(message.get("tool_calls") or []))
    if role == "tool":
        return ToolMessage(content, tool_call_id=message["tool_call_id"])
    return HumanMessage(content, name=message.get("name"))


def _thread_id(default: str | None) -> str:
    thread = None
    try:
        from langgraph.config import get_config

        thread = get_config().get("configurable", {}).get("thread_id")
    except RuntimeError:  # called outside a graph run
        pass
    if thread:
        return str(thread)
    if default:
        return default
    raise ConfigurationError(
        "TokenleanMemoryMiddleware needs a conversation: run the agent with "
        "config={'configurable': {'thread_id': ...}} or pass session= to the middleware"
    )


class TokenleanMemoryMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Sends the model a budgeted context instead of the whole transcript.

    Args:
        memory: the tokenlean memory (its store keeps every turn).
        budget: prompt-token budget of each model call.
        tenant: tenant namespace.
        session: the session when the run has no ``thread_id`` (default: none, and a run
            without a ``thread_id`` is refused rather than mixed with other conversations).
        on_pack: called with each :class:`ContextPack` (auditing, metrics).
    """

    def __init__(
        self,
        memory: ConversationMemory,
        *,
        budget: int = 2000,
        tenant: str = "default",
        session: str | None = None,
        on_pack: Callable[[ContextPack], None] | None = None,
    ) -> None:
        super().__init__()
        self.memory = memory
        self.budget = budget
        self.tenant = tenant
        self.session = session
        self.on_pack = on_pack

    def _sync(self, session: str, messages: Sequence[BaseMessage]) -> None:
        """Record the messages not recorded yet, by message id (the agent state gives every
        message one); system prompts are taken from the request, not stored as turns."""
        known = {t.id for t in self.memory.turns(session, tenant=self.tenant)}
        new = [to_tokenlean(m) for m in messages if m.type != "system" and m.id not in known]
        if new:
            self.memory.add(session, new, tenant=self.tenant)

    def _rewrite(self, request: ModelRequest) -> ModelRequest:  # type: ignore[type-arg]
        session = _thread_id(self.session)
        self._sync(session, request.messages)
        system = request.system_message.text if request.system_message is not None else None
        pack = self.memory.context(session, budget=self.budget, tenant=self.tenant, system=system)
        if self.on_pack is not None:
            self.on_pack(pack)
        messages = [to_langchain(m) for m in pack.messages]
        if messages and isinstance(messages[0], SystemMessage):
            return request.override(system_message=messages[0], messages=messages[1:])
        return request.override(messages=messages)

    def wrap_model_call(
        self,
        request: ModelRequest,  # type: ignore[type-arg]
        handler: Callable[[ModelRequest], ModelResponse],  # type: ignore[type-arg]
    ) -> ModelResponse:  # type: ignore[type-arg]
        return handler(self._rewrite(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,  # type: ignore[type-arg]
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],  # type: ignore[type-arg]
    ) -> ModelResponse:  # type: ignore[type-arg]
        import asyncio

        rewritten = await asyncio.to_thread(self._rewrite, request)
        return await handler(rewritten)


class TokenleanChatMessageHistory(BaseChatMessageHistory):
    """A chat history whose ``messages`` are the budgeted context of the session.

    ``clear()`` starts a new session segment: the old turns stay in the store (the raw
    transcript is never destroyed) but no longer reach the model.
    """

    def __init__(
        self,
        memory: ConversationMemory,
        session: str,
        *,
        budget: int = 2000,
        tenant: str = "default",
        system: str | None = None,
    ) -> None:
        self.memory = memory
        self.base_session = session
        self.budget = budget
        self.tenant = tenant
        self.system = system

    @property
    def session(self) -> str:
        return self.memory.segment(self.base_session, tenant=self.tenant)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        if not self.memory.turns(self.session, tenant=self.tenant):
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
