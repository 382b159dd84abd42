"""``TokenleanMemoryMiddleware``: tokenlean context memory for LangChain agents.

The middleware plugs into ``create_agent``: before each model call it records the conversation's
new messages in a :class:`~tokenlean.ConversationMemory` (keyed by the run's ``thread_id``) and
replaces the request's messages with the memory's budgeted :class:`~tokenlean.ContextPack`; when
the run ends it records what the run added after the last model call (the final reply, tool
results), so the transcript holds every turn when ``invoke`` returns. The agent's checkpointer
still keeps the full history; only what reaches the model is compressed.

LangChain's agents (the ``langchain`` package, which runs on LangGraph) come with the ``agents``
extra, ``pip install 'langchain-tokenlean[agents]'``; the rest of ``langchain_tokenlean`` needs
only ``langchain-core``. Without the extra, importing this module raises
:class:`~tokenlean.MissingDependencyError` naming it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_tokenlean.memory import to_langchain, to_tokenlean
from tokenlean import (
    ConfigurationError,
    ContextPack,
    ConversationMemory,
    MissingDependencyError,
    StoreError,
    TokenleanError,
    check_budget,
    count_tool_tokens,
)

logger = logging.getLogger("tokenlean.memory")

try:
    from langchain.agents.middleware import (
        AgentMiddleware,
        AgentState,
        ModelRequest,
        ModelResponse,
    )
    from langgraph.runtime import Runtime  # langchain's agents run on LangGraph
except ImportError as exc:
    _error = MissingDependencyError("langchain", "agents", "TokenleanMemoryMiddleware")
    # The error's own command names the core's extras; this one belongs to the adapter.
    _error.msg = (
        "TokenleanMemoryMiddleware needs LangChain's agents (the 'langchain' package), which "
        "are not installed. Install them with: pip install 'langchain-tokenlean[agents]'"
    )
    _error.args = (_error.msg,)
    raise _error from exc

__all__ = ["TokenleanMemoryMiddleware"]


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


class TokenleanMemoryMiddleware(AgentMiddleware):
    """Sends the model a budgeted context instead of the whole transcript.

    Args:
        memory: the tokenlean memory (its store keeps every turn).
        budget: prompt tokens of what each model call receives: the messages (tool calls and
            results in the provider's shape, the current turn's tool exchange included) and the
            bound tools' schemas.
        tenant: tenant namespace.
        session: the session when the run has no ``thread_id`` (default: none, and a run
            without a ``thread_id`` is refused rather than mixed with other conversations).
        on_pack: called with each :class:`ContextPack` (auditing, metrics).
        cache_control: a marker put on the static prefix's content block (the system prompt,
            the first block of the system message, byte-identical on every call), for providers
            that cache up to explicit breakpoints: ``{"type": "ephemeral"}`` with
            ``langchain-anthropic``. Default: none (OpenAI caches prefixes by itself).

    The system message's content is a list of text blocks: the system prompt alone first, then
    what changes from call to call (state, summary, retrieved turns), so a provider's prefix
    cache hits on the system prompt across calls.

    Every message of the thread is recorded once (messages carry ids; the memory skips ids it
    holds): the thread's new messages before each model call, and at the end of each run
    (``after_agent``) the rest, the final reply included. Recording happens there rather than
    right after each model call because other middleware's ``after_model`` hooks may still
    rewrite the reply under the same id (``PIIMiddleware(apply_to_output=True)`` redacts it);
    by the next model call, or the run's end, the thread holds its final version. A run
    interrupted for a human decision records its pending reply when it is resumed.

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models import FakeListChatModel
        >>> from langgraph.checkpoint.memory import InMemorySaver
        >>> from tokenlean import ConversationMemory
        >>> from tokenlean.testing import HashingEmbedder
        >>> memory = ConversationMemory(embedder=HashingEmbedder())
        >>> agent = create_agent(FakeListChatModel(responses=["Order 1234 left Lyon."]),
        ...                      middleware=[TokenleanMemoryMiddleware(memory, budget=500)],
        ...                      checkpointer=InMemorySaver())
        >>> _ = agent.invoke({"messages": [("user", "Where is order 1234?")]},
        ...                  {"configurable": {"thread_id": "ticket-42"}})
        >>> [t.role for t in memory.turns("ticket-42")]
        ['user', 'assistant']
    """

    def __init__(
        self,
        memory: ConversationMemory | str,
        *,
        budget: int = 2000,
        tenant: str = "default",
        session: str | None = None,
        on_pack: Callable[[ContextPack], None] | None = None,
        cache_control: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # A transcript store URI (sqlite:///path, redis://host/db): replicas share conversations.
        self.memory = ConversationMemory(memory) if isinstance(memory, str) else memory
        self.budget = check_budget(budget)  # when built, not at the first model call
        self.tenant = tenant
        self.session = session
        self.on_pack = on_pack
        self.cache_control = dict(cache_control) if cache_control else None
        # Batches a failed write at the end of a run left in this process, by thread, each
        # thread's behind a lock of its own (one thread's hung store write delays no other).
        self._held: dict[str, list[list[dict[str, Any]]]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _thread_lock(self, session: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(session, threading.Lock())

    def _sync(self, session: str, messages: Sequence[BaseMessage]) -> None:
        """Record the messages not recorded yet, after any batch a failed write held: the
        core's ``add`` skips ids it already holds (the agent state gives every message one).
        System prompts are taken from the request, not stored as turns."""
        with self._thread_lock(session):
            held = self._held.get(session, [])
            while held:
                try:
                    self.memory.add(session, held[0], tenant=self.tenant)
                except StoreError:
                    raise
                except TokenleanError as exc:  # refused by the store itself: never writable
                    logger.error(
                        "tokenlean: %d held message(s) of thread %r dropped: the store refuses "
                        "them (%s: %s)",
                        len(held[0]), session, type(exc).__name__, str(exc)[:300],
                    )  # fmt: skip
                held.pop(0)
            self._held.pop(session, None)
        batch = [to_tokenlean(m) for m in messages if m.type != "system"]
        if batch:
            self.memory.add(session, batch, tenant=self.tenant)

    def _record(self, state: AgentState[Any]) -> None:
        """Record the thread's messages not recorded yet (at the end of a run). A store that
        fails here does not fail the run (its answer is paid for): the messages are held in
        this process (logged) and recorded before the thread's next model call, with or
        without a checkpointer."""
        session = _thread_id(self.session)
        try:
            self._sync(session, state["messages"])
        except StoreError as exc:
            batch = [to_tokenlean(m) for m in state["messages"] if m.type != "system"]
            with self._thread_lock(session):
                self._held.setdefault(session, []).append(batch)
            logger.warning(
                "tokenlean: memory store failed (%s: %s) recording thread %r; its messages are "
                "held in this process and recorded before the thread's next model call",
                type(exc).__name__, str(exc)[:300], session,
            )  # fmt: skip

    def _rewrite(self, request: ModelRequest) -> ModelRequest:
        session = _thread_id(self.session)
        self._sync(session, request.messages)
        system = request.system_message.text if request.system_message is not None else None
        tools = [convert_to_openai_tool(tool) for tool in request.tools or ()]
        schemas = count_tool_tokens(tools, counter=self.memory.counter) if tools else 0
        if schemas >= self.budget:
            raise ConfigurationError(
                f"budget {self.budget} cannot hold the tool schemas alone ({schemas} tokens)"
            )
        try:
            pack = self.memory.context(
                session, budget=self.budget - schemas, tenant=self.tenant, system=system
            )
        except ConfigurationError as exc:
            if not schemas:
                raise
            raise ConfigurationError(
                f"budget {self.budget}, less {schemas} tokens of tool schemas: {exc}"
            ) from exc
        if self.on_pack is not None:
            self.on_pack(pack)
        rendered = pack.messages
        first = rendered[0] if rendered else None
        if self.cache_control and first and first["role"] == "system":
            blocks = first["content"]
            if isinstance(blocks, list):  # the static prefix is the first block
                marked = [{**blocks[0], "cache_control": dict(self.cache_control)}, *blocks[1:]]
                rendered = [{**first, "content": marked}, *rendered[1:]]
        messages = cast(list[AnyMessage], [to_langchain(m) for m in rendered])
        if messages and isinstance(messages[0], SystemMessage):
            return request.override(system_message=messages[0], messages=messages[1:])
        return request.override(messages=messages)

    def wrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], ModelResponse],
    ) -> ModelResponse:
        return handler(self._rewrite(request))

    async def awrap_model_call(
        self,
        request: ModelRequest,
        handler: Callable[[ModelRequest], Awaitable[ModelResponse]],
    ) -> ModelResponse:
        import asyncio

        rewritten = await asyncio.to_thread(self._rewrite, request)
        return await handler(rewritten)

    def after_agent(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        self._record(state)
        return None

    async def aafter_agent(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        import asyncio

        await asyncio.to_thread(self._record, state)
        return None
