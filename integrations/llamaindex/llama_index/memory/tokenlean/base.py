"""A LlamaIndex ``BaseMemory`` backed by tokenlean's :class:`~tokenlean.ConversationMemory`.

``put``/``aput``/``aput_messages``/``set`` append to the raw transcript (never destroyed);
``get``/``aget`` return the budgeted context (system, state, summary, retrieved and recent turns)
instead of the whole history; ``get_all`` returns every turn. It works with ``FunctionAgent`` /
``AgentWorkflow`` and with chat engines. Serialized (as a workflow context does), it keeps its
settings and its transcript store's URI (a password masked), so a deserialized memory reopens the
same SQLite file or Redis keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    CacheControl,
    CachePoint,
    ChatMessage,
    ContentBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.types import BaseMemory
from llama_index.llms.tokenlean.store_uri import (
    refuse_masked,
    transcript_store_uri,
    type_name,
)

from tokenlean import (
    ConfigurationError,
    ConversationMemory,
    PromptSummarizer,
    SQLiteTranscriptStore,
    StoreError,
    TokenleanError,
    Turn,
    check_budget,
    count_message_tokens,
    normalize_role,
)

logger = logging.getLogger("tokenlean.memory")

__all__ = [
    "LlamaIndexSummarizer",
    "TokenleanFunctionAgent",
    "TokenleanMemory",
    "to_llamaindex",
    "to_tokenlean",
]


def _tool_call(call: Any) -> dict[str, Any]:
    """A tool call in the OpenAI shape the core counts (the shape a provider receives)."""
    if isinstance(call, ToolCallBlock):
        return {
            "id": call.tool_call_id or "",
            "type": "function",
            "function": {"name": call.tool_name, "arguments": json.dumps(call.tool_kwargs)},
        }
    data = call if isinstance(call, dict) else call.model_dump()
    return dict(data)


def to_tokenlean(message: ChatMessage) -> dict[str, Any]:
    """A LlamaIndex chat message as a tokenlean message: its role (by tokenlean's role map),
    text, and tool calls (from ``ToolCallBlock`` blocks or ``additional_kwargs["tool_calls"]``)
    and tool-call id in the provider's shape."""
    role = normalize_role(message.role.value)
    data: dict[str, Any] = {"role": role, "content": message.content or ""}
    if role == "tool" and message.additional_kwargs.get("tool_call_id"):
        # Without one, the core refuses the message (MalformedRequestError), as it does a
        # LangChain tool message's: a tool result that answers no call is refused by providers.
        data["tool_call_id"] = str(message.additional_kwargs["tool_call_id"])
    calls = [block for block in message.blocks if isinstance(block, ToolCallBlock)]
    calls += list(message.additional_kwargs.get("tool_calls") or [])
    if calls:
        data["tool_calls"] = [_tool_call(call) for call in calls]
    return data


def _cache() -> CachePoint:
    return CachePoint(cache_control=CacheControl(type="ephemeral"))


def to_llamaindex(message: dict[str, Any], *, cache_point: bool = False) -> ChatMessage:
    """A tokenlean message (from a :class:`~tokenlean.ContextPack`) as a LlamaIndex message,
    tool calls in ``additional_kwargs["tool_calls"]`` (the OpenAI shape) and a tool result's
    ``tool_call_id`` beside them.

    Text parts (a pack's system message: the static prefix first, then what changes) become
    one ``TextBlock`` each, in order; with ``cache_point``, a ``CachePoint`` follows the first
    one, so that a provider caching up to explicit breakpoints (Anthropic) caches the static
    prefix."""
    kwargs: dict[str, Any] = {}
    if message.get("tool_call_id"):
        kwargs["tool_call_id"] = message["tool_call_id"]
    if message.get("tool_calls"):
        kwargs["tool_calls"] = list(message["tool_calls"])
    content = message.get("content") or ""
    role = MessageRole(message["role"])
    if isinstance(content, str):
        return ChatMessage(role=role, content=content, additional_kwargs=kwargs)
    blocks: list[ContentBlock] = []
    for index, part in enumerate(content):
        blocks.append(TextBlock(text=part if isinstance(part, str) else str(part.get("text", ""))))
        if cache_point and index == 0:
            blocks.append(_cache())
    return ChatMessage(role=role, blocks=blocks, additional_kwargs=kwargs)


def _tool_schema(tool: Any) -> dict[str, Any]:
    metadata = getattr(tool, "metadata", None)
    if metadata is not None and callable(getattr(metadata, "to_openai_tool", None)):
        return dict(metadata.to_openai_tool(skip_length_check=True))
    return dict(tool)


_REMEDY = (
    "pass the store to TokenleanMemory.from_dict(data, store=...) as a URI with its "
    "credentials, or the whole memory as from_dict(data, memory=ConversationMemory(...))"
)


class TokenleanMemory(BaseMemory):
    """LlamaIndex memory that sends the model a budgeted context.

    Args:
        session: the conversation id.
        token_limit: prompt tokens of what ``get()`` returns (LlamaIndex's name for a memory's
            limit); ``budget=`` is its deprecated alias.
        tenant: tenant namespace.
        system: a system prompt to pin (default: the transcript's system turns).
        store_path: SQLite transcript file (None: in memory, or the ``memory`` given).
        store: a transcript store URI instead (``sqlite:///path.db``, ``redis://host:port/db``),
            so that replicas share the conversation. After construction it holds the URI of
            the transcript store in use (``memory``'s included), its password masked.
        cache_point: put a ``CachePoint`` after the static prefix (the system prompt, the
            first block of the first message), for LLMs that cache up to explicit breakpoints
            (``llama-index-llms-anthropic``); off by default.
        memory: an existing :class:`ConversationMemory` to use, or a transcript store URI (as
            ``store=``, the first argument as the LangChain adapters take it).

    Serialized (``to_dict``, a workflow context), it keeps its settings and its transcript
    store's URI, never a password: ``from_dict`` reopens a SQLite or Redis transcript, turns
    included; an in-process (``memory://``) transcript starts empty. The
    :class:`ConversationMemory`'s own collaborators (embedder, summarizer, slots) are not
    serialized. ``from_dict(data, store=uri)`` gives back a Redis password;
    ``from_dict(data, memory=...)`` a whole memory (required for a custom transcript store).

    Raises:
        ConfigurationError: ``store`` is a serialized URI whose password was masked.

    Example:
        >>> memory = TokenleanMemory(session="s1", store="memory://", token_limit=500)
        >>> memory.to_dict()["store"]
        'memory://'
    """

    session: str = Field(default="default")
    token_limit: int = Field(default=2000, gt=0)
    tenant: str = Field(default="default")
    system: str | None = Field(default=None)
    store_path: str | None = Field(default=None)
    store: str | None = Field(default=None)
    cache_point: bool = Field(default=False)
    _memory: ConversationMemory = PrivateAttr()
    # Batches a failed store write left in this process, with the segment they belong to,
    # written before anything else; the lock orders puts from several threads.
    _pending: list[tuple[str | None, list[dict[str, Any]]]] = PrivateAttr(default_factory=list)
    _writing: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    _segment: str | None = PrivateAttr(default=None)  # the segment last read or started

    def __init__(self, memory: ConversationMemory | str | None = None, **data: Any) -> None:
        if isinstance(memory, str):  # a transcript store URI, as the LangChain adapters take
            if data.get("store") not in (None, memory):
                raise ConfigurationError("give the transcript store once: memory= or store=")
            data["store"], memory = memory, None
        elif memory is not None and not isinstance(memory, ConversationMemory):
            raise ConfigurationError(
                "memory must be a ConversationMemory or a transcript store URI, not "
                f"{type(memory).__name__}"
            )
        if "budget" in data:
            warnings.warn(
                "TokenleanMemory(budget=...) is deprecated: use token_limit=...",
                DeprecationWarning,
                stacklevel=2,
            )
            data.setdefault("token_limit", data.pop("budget"))
        if "token_limit" in data:  # the core's check and error, not pydantic's coercion
            check_budget(data["token_limit"])
        super().__init__(**data)
        describe = memory is not None or self.store is not None or self.store_path is None
        if memory is None:
            if self.store is not None:
                refuse_masked(self.store, owner="TokenleanMemory", remedy=_REMEDY)
                memory = ConversationMemory(self.store)
            else:
                path = self.store_path
                memory = ConversationMemory(SQLiteTranscriptStore(path) if path else None)
        self._memory = memory
        if describe:  # the store in use, without its password (None: a custom store)
            self.store = transcript_store_uri(memory.store)

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """Its settings and its transcript store's URI (a password masked; see the class).
        A custom transcript store is recorded by its type: ``from_dict`` then needs
        ``memory=``."""
        data = super().to_dict(**kwargs)
        if data.get("store") is None and self.store_path is None:
            store = self._memory.store
            if transcript_store_uri(store) is None:
                data["custom_store"] = type_name(store)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> TokenleanMemory:
        """Rebuild from :meth:`to_dict`'s data, reopening its transcript store.

        ``store=`` (a URI with its credentials) or ``memory=`` (a whole
        :class:`ConversationMemory`) gives back what the data cannot hold.

        Raises:
            ConfigurationError: the transcript store was custom and no ``memory=`` is given,
                or its password was masked and neither ``store=`` nor ``memory=`` is given.
        """
        data = {**data, **kwargs}
        data.pop("class_name", None)
        custom = data.pop("custom_store", None)
        if custom is not None and data.get("memory") is None and "store" not in kwargs:
            raise ConfigurationError(
                f"TokenleanMemory.from_dict: the {custom} transcript store is not "
                f"serialized; {_REMEDY}"
            )
        return cls(**data)

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanMemory"

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> TokenleanMemory:
        return cls(**kwargs)

    @property
    def budget(self) -> int:
        """Deprecated alias of :attr:`token_limit`."""
        return self.token_limit

    @property
    def memory(self) -> ConversationMemory:
        return self._memory

    @property
    def _session(self) -> str:
        return self._memory.segment(self.session, tenant=self.tenant)

    def get(self, input: str | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The budgeted context. With ``input`` (a chat engine's pending message), it guides
        retrieval and is left for the caller to append."""
        if (error := self._flush()) is not None:  # a context without them would mislead
            raise error
        session = self._session
        if not self._memory.count(session, tenant=self.tenant) and input is None:
            return []
        pack = self._memory.context(session, budget=self.token_limit, tenant=self.tenant,
                                    system=self.system, user=input)  # fmt: skip
        messages = [to_llamaindex(m, cache_point=self.cache_point) for m in pack.messages]
        if input is not None and messages and messages[-1].content == input:
            messages = messages[:-1]
        return messages

    def get_within(
        self,
        *,
        pinned: Sequence[ChatMessage] = (),
        extra: Sequence[ChatMessage] = (),
        tools: Sequence[Any] = (),
    ) -> list[ChatMessage]:
        """The budgeted context for a call that also sends ``pinned`` messages before it (an
        agent's system prompt), ``extra`` after it (the current turn's tool calls and results)
        and ``tools``' schemas: together they stay within ``token_limit``.

        Raises:
            ConfigurationError: the pinned and extra messages and the tool schemas alone exceed
                ``token_limit``.
        """
        if (error := self._flush()) is not None:
            raise error
        shaped = [to_tokenlean(m) for m in (*pinned, *extra)]
        schemas = [_tool_schema(tool) for tool in tools]
        around = count_message_tokens(shaped, tools=schemas or None, counter=self._memory.counter)
        # A request's fixed tokens (reply priming) are in the pack's own count too.
        fixed = count_message_tokens([], counter=self._memory.counter).total
        room = self.token_limit - (around.total - fixed)
        if room <= 0:
            raise ConfigurationError(
                f"token_limit {self.token_limit} cannot hold the current turn's tool exchange "
                f"and the tool schemas ({around.total} tokens)"
            )
        pack = self._memory.context(
            self._session, budget=room, tenant=self.tenant, system=self.system
        )
        return [to_llamaindex(m, cache_point=self.cache_point) for m in pack.messages]

    async def aget_within(
        self,
        *,
        pinned: Sequence[ChatMessage] = (),
        extra: Sequence[ChatMessage] = (),
        tools: Sequence[Any] = (),
    ) -> list[ChatMessage]:
        """:meth:`get_within` off the event loop."""
        return await asyncio.to_thread(self.get_within, pinned=pinned, extra=extra, tools=tools)

    def get_all(self) -> list[ChatMessage]:
        """Every stored turn."""
        self._flush()
        return [
            to_llamaindex(t.to_message())
            for t in self._memory.turns(self._session, tenant=self.tenant)
        ]

    def put(self, message: ChatMessage) -> None:
        """Record a message. A store that fails does not fail the chat (its answer is already
        paid for): the message is kept in this process, logged, and written, in order, before
        the next ``put``, ``get``, ``get_within``, ``get_all``, ``set`` or ``reset`` (see
        :attr:`pending`). A message the memory refuses (malformed) raises and is not kept."""
        self._write([to_tokenlean(message)])

    def put_messages(self, messages: list[ChatMessage]) -> None:
        """Record messages, as :meth:`put` does."""
        self._write([to_tokenlean(m) for m in messages])

    @property
    def pending(self) -> int:
        """Messages held in this process since the store failed, not written yet."""
        with self._writing:
            return sum(len(batch) for _, batch in self._pending)

    def _flush(self) -> StoreError | None:
        """Write the held batches, oldest first, each to its segment and as it was given (a
        batch a write only seemed to fail to store is recognized as a retry, not stored
        twice). The store's error if it still fails (the rest stay held)."""
        with self._writing:
            while self._pending:
                segment, batch = self._pending[0]
                try:
                    # A batch held before any segment was known goes to the current one.
                    self._memory.add(segment or self._session, batch, tenant=self.tenant)
                except StoreError as exc:
                    logger.warning(
                        "tokenlean: memory store failed (%s: %s); %d message(s) of session %r "
                        "held in this process, written when it answers",
                        type(exc).__name__, str(exc)[:300], self.pending, self.session,
                    )  # fmt: skip
                    return exc
                except TokenleanError as exc:  # refused by the store itself: never writable
                    logger.error(
                        "tokenlean: %d held message(s) of session %r dropped: the store refuses "
                        "them (%s: %s)",
                        len(batch), self.session, type(exc).__name__, str(exc)[:300],
                    )  # fmt: skip
                self._pending.pop(0)
            return None

    def _write(self, messages: list[dict[str, Any]]) -> None:
        with self._writing:
            segment: str | None
            try:
                segment = self._segment = self._session
            except StoreError:  # the store is down: the segment last known, else the current
                segment = self._segment  # one when the batch is written
            if self._flush() is not None:  # still failing: checked, then held behind the rest
                for index, message in enumerate(messages):
                    Turn.from_message(message, index)  # raises if malformed
                if messages:
                    self._pending.append((segment, messages))
                return
            try:
                self._memory.add(segment or self._session, messages, tenant=self.tenant)
            except StoreError:  # add() checks the messages before it writes: these are valid
                self._pending.append((segment, messages))
                self._flush()  # logs it

    def set(self, messages: list[ChatMessage]) -> None:
        """Make ``messages`` the conversation, as LlamaIndex's memories do.

        When they continue the stored turns (the same roles and texts, then more), only the new
        ones are recorded. Otherwise (another history, a shorter one) a new segment starts with
        them, as :meth:`reset` does: the earlier turns stay stored (the transcript is
        append-only) but no longer reach the model."""
        with self._writing:
            if (error := self._flush()) is not None:  # what it replaces must be written first
                raise error
            self._set(messages)

    def _set(self, messages: list[ChatMessage]) -> None:
        stored = self._memory.turns(self._session, tenant=self.tenant)
        given = [to_tokenlean(m) for m in messages]
        continues = len(given) >= len(stored) and all(
            (t.role, t.content) == (m["role"], m.get("content") or "")
            for t, m in zip(stored, given, strict=False)
        )
        if not continues:
            self.reset()
            stored = []
        if len(given) > len(stored):
            self._memory.add(self._session, given[len(stored) :], tenant=self.tenant)

    def reset(self) -> None:
        """Start a new segment: earlier turns stay stored but no longer reach the model.
        Messages still held from a failed write go to the segment they were put in."""
        with self._writing:
            self._flush()
            self._segment = self._memory.new_segment(self.session, tenant=self.tenant)


class LlamaIndexSummarizer(PromptSummarizer):
    """A tokenlean summarizer backed by any LlamaIndex LLM (see
    :class:`~tokenlean.PromptSummarizer`: one new item per update, sourced from its turns)."""

    def __init__(self, llm: Any, *, prompt: str | None = None) -> None:
        super().__init__(lambda text: llm.complete(text).text, prompt=prompt)
        self.llm = llm


class TokenleanFunctionAgent(FunctionAgent):
    """A ``FunctionAgent`` whose every LLM call fits its :class:`TokenleanMemory`'s
    ``token_limit``, tools included.

    A plain ``FunctionAgent`` reads the memory once per user turn and then appends the turn's
    tool calls and results (its scratchpad) outside it, so a turn with tools sends more than
    the memory's limit. This agent re-reads the memory before each step with
    :meth:`TokenleanMemory.get_within`: the system prompt, the scratchpad and the tool schemas
    are counted first, and the memory fills what is left. The system prompt stays the first
    message, byte-identical on every call (the static prefix; with the memory's ``cache_point``,
    a ``CachePoint`` closes it). With any other memory it behaves as ``FunctionAgent``.
    """

    async def take_step(
        self,
        ctx: Any,
        llm_input: list[ChatMessage],
        tools: Sequence[Any],
        memory: BaseMemory,
    ) -> Any:
        if isinstance(memory, TokenleanMemory):
            scratchpad: list[ChatMessage] = await ctx.store.get(self.scratchpad_key, default=[])
            pinned = [
                m for m in llm_input[:1] if self.system_prompt and m.role == MessageRole.SYSTEM
            ]
            context = await memory.aget_within(pinned=pinned, extra=scratchpad, tools=tools)
            if memory.cache_point and pinned:  # the agent's system prompt is the static prefix
                pinned = [
                    ChatMessage(role=MessageRole.SYSTEM, blocks=[*pinned[0].blocks, _cache()])
                ]
            llm_input = [*pinned, *context]
        return await super().take_step(ctx, llm_input, tools, memory)
