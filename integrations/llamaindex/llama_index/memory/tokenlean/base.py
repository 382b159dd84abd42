"""A LlamaIndex ``BaseMemory`` backed by tokenlean's :class:`~tokenlean.ConversationMemory`.

``put``/``aput``/``aput_messages``/``set`` append to the raw transcript (never destroyed);
``get``/``aget`` return the budgeted context (system, state, summary, retrieved and recent turns)
instead of the whole history; ``get_all`` returns every turn. It works with ``FunctionAgent`` /
``AgentWorkflow`` and with chat engines. Serialized (as a workflow context does), it keeps its
settings; with ``store_path`` set, a deserialized memory reopens the same SQLite transcript.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.types import BaseMemory

from tokenlean import ConversationMemory, PromptSummarizer, SQLiteTranscriptStore

__all__ = ["TokenleanMemory"]


def _to_tokenlean(message: ChatMessage) -> dict[str, Any]:
    role = message.role.value
    if role in ("chatbot", "model", "function"):
        role = "assistant"
    data: dict[str, Any] = {"role": role, "content": message.content or ""}
    if role == "tool":
        data["tool_call_id"] = str(message.additional_kwargs.get("tool_call_id") or "unknown")
    calls = message.additional_kwargs.get("tool_calls")
    if calls:
        data["tool_calls"] = [
            call if isinstance(call, dict) else call.model_dump() for call in calls
        ]
    return data


def _to_llamaindex(message: dict[str, Any]) -> ChatMessage:
    kwargs: dict[str, Any] = {}
    if message.get("tool_call_id"):
        kwargs["tool_call_id"] = message["tool_call_id"]
    if message.get("tool_calls"):
        kwargs["tool_calls"] = list(message["tool_calls"])
    return ChatMessage(
        role=MessageRole(message["role"]),
        content=message.get("content") or "",
        additional_kwargs=kwargs,
    )


class TokenleanMemory(BaseMemory):
    """LlamaIndex memory that sends the model a budgeted context.

    Args:
        session: the conversation id.
        budget: prompt-token budget of ``get()``.
        tenant: tenant namespace.
        system: a system prompt to pin (default: the transcript's system turns).
        store_path: SQLite transcript file (None: in memory, or the ``memory`` given).
        memory: an existing :class:`ConversationMemory` to use.
    """

    session: str = Field(default="default")
    budget: int = Field(default=2000, gt=0)
    tenant: str = Field(default="default")
    system: str | None = Field(default=None)
    store_path: str | None = Field(default=None)
    _memory: ConversationMemory = PrivateAttr()

    def __init__(self, memory: ConversationMemory | None = None, **data: Any) -> None:
        super().__init__(**data)
        if memory is None:
            store = SQLiteTranscriptStore(self.store_path) if self.store_path else None
            memory = ConversationMemory(store)
        self._memory = memory

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanMemory"

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> TokenleanMemory:
        return cls(**kwargs)

    @property
    def memory(self) -> ConversationMemory:
        return self._memory

    @property
    def _session(self) -> str:
        return self._memory.segment(self.session, tenant=self.tenant)

    def get(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The budgeted context. With ``input`` (a chat engine's pending message), it guides
        retrieval and is left for the caller to append."""
        session = self._session
        if not self._memory.turns(session, tenant=self.tenant) and input is None:
            return []
        pack = self._memory.context(session, budget=self.budget, tenant=self.tenant,
                                    system=self.system, user=input)  # fmt: skip
        messages = [_to_llamaindex(m) for m in pack.messages]
        if input is not None and messages and messages[-1].content == input:
            messages = messages[:-1]
        return messages

    def get_all(self) -> list[ChatMessage]:
        """Every stored turn."""
        return [
            _to_llamaindex(t.to_message())
            for t in self._memory.turns(self._session, tenant=self.tenant)
        ]

    def put(self, message: ChatMessage) -> None:
        self._memory.add(self._session, [_to_tokenlean(message)], tenant=self.tenant)

    def put_messages(self, messages: list[ChatMessage]) -> None:
        self._memory.add(self._session, [_to_tokenlean(m) for m in messages], tenant=self.tenant)

    def set(self, messages: list[ChatMessage]) -> None:
        """Record messages beyond those already stored (the transcript is append-only)."""
        known = len(self._memory.turns(self._session, tenant=self.tenant))
        if len(messages) > known:
            self.put_messages(messages[known:])

    def reset(self) -> None:
        """Start a new segment: earlier turns stay stored but no longer reach the model."""
        self._memory.new_segment(self.session, tenant=self.tenant)


class LlamaIndexSummarizer(PromptSummarizer):
    """A tokenlean summarizer backed by any LlamaIndex LLM (see
    :class:`~tokenlean.PromptSummarizer`: one new item per update, sourced from its turns)."""

    def __init__(self, llm: Any, *, prompt: str | None = None) -> None:
        super().__init__(lambda text: llm.complete(text).text, prompt=prompt)
        self.llm = llm
