"""``ConversationMemory``: the cheapest context that keeps the answer right, under one budget.

For each model call it assembles a :class:`ContextPack` from the raw transcript (which it never
changes): the system prompt and the slot state (pinned), the user turn (pinned), then recent
turns, the rolling summary and retrieved older turns, each within its share of the budget.
Unused share flows to the next section; whatever is left at the end extends the recent window.
The rendered messages never exceed the budget, and every item says which turns it came from.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tokenlean._embeddings import Embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._memory.assembly import ContextPack, MemoryBudget, PackItem, assemble, turn_text
from tokenlean._memory.slots import SlotExtractor, SlotState
from tokenlean._memory.summary import ExtractiveSummarizer, RollingSummary, Summarizer, turn_label
from tokenlean._memory.transcript import TranscriptStore, Turn, turn_from_message
from tokenlean._memory.transcript_memory import MemoryTranscriptStore
from tokenlean._retrieval.documents import SentenceSplitter
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.search import HybridSearcher
from tokenlean._tokens.counting import get_token_counter

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["ConversationMemory"]

logger = logging.getLogger("tokenlean.memory")


@dataclass
class _Session:
    index: HybridIndex | None = None
    indexed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: Future[None] | None = None  # a background summary update
    dirty: bool = False  # new turns arrived while it ran
    summary_error: str | None = None


class ConversationMemory:
    """Keeps every turn, and builds a budgeted context for each model call. Thread-safe.

    Args:
        store: the transcripts (default: in memory; :class:`SQLiteTranscriptStore` persists).
        embedder: for retrieving older turns (default: the bundled model).
        counter: the token counter of the budget.
        summarizer: default :class:`ExtractiveSummarizer` (no LLM).
        slots: a pydantic model of the session's structured state (None: no slots).
        extractors: fill slots from new turns.
        budget: how the context budget is shared.
        summarize_after: tokens of unsummarized older history that trigger a summary update.
        keep_recent: turns at the end never summarized (they are the recent window's).
        background: update summaries in a background thread, off the request path.
        clock: time source for turn timestamps.

    Example:
        An early turn that matters comes back, within the budget, 60 turns later:

        >>> from tokenlean.testing import HashingEmbedder
        >>> memory = ConversationMemory(embedder=HashingEmbedder(64))
        >>> _ = memory.add("s1", [{"role": "user", "content": "My order number is 4417."},
        ...                       {"role": "assistant", "content": "Thanks, noted."}])
        >>> for i in range(30):
        ...     _ = memory.add("s1", [
        ...         {"role": "user", "content": f"Question {i} about shipping times?"},
        ...         {"role": "assistant", "content": f"Answer {i}: two to three days."}])
        >>> pack = memory.context("s1", budget=200, user="What was my order number?")
        >>> pack.tokens <= 200, "t0" in pack.sources(), "4417" in pack.messages[0]["content"]
        (True, True, True)
        >>> sorted(pack.section_tokens())
        ['recent', 'retrieved', 'user']
    """

    def __init__(
        self,
        store: TranscriptStore | None = None,
        *,
        embedder: Embedder | None = None,
        counter: Callable[[str], int] | None = None,
        summarizer: Summarizer | None = None,
        slots: type[BaseModel] | None = None,
        extractors: Sequence[SlotExtractor] = (),
        budget: MemoryBudget | None = None,
        summarize_after: int = 2000,
        keep_recent: int = 8,
        background: bool = False,
        clock: Callable[[], float] = time.time,
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        self.store = store if store is not None else MemoryTranscriptStore()
        self._embedder = embedder
        self.counter = counter or get_token_counter()
        self.summarizer = summarizer or ExtractiveSummarizer(counter=self.counter)
        self.slot_model = slots
        self.extractors = list(extractors)
        self.shares = budget or MemoryBudget()
        self.summarize_after = summarize_after
        self.keep_recent = keep_recent
        self.clock = clock
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1) if background else None

    # ------------------------------------------------------------------ writing

    def _session(self, tenant: str, session: str) -> _Session:
        if not tenant or not session:
            raise ConfigurationError("tenant and session must be non-empty strings")
        with self._lock:
            return self._sessions.setdefault((tenant, session), _Session())

    def add(
        self, session: str, messages: Sequence[Mapping[str, Any]], *, tenant: str = "default"
    ) -> list[Turn]:
        """Append messages to the session's transcript; return the new turns.

        All messages are validated first: if any is malformed, none is stored.

        Raises:
            MalformedRequestError: a message without a valid role or with non-text content.
            InvalidInputError: a turn id already in the session, or a slot value the slot model
                rejects (the turns are stored; the slots are not changed).
        """
        state = self._session(tenant, session)
        with state.lock:
            for attempt in range(5):
                start = len(self.store.turns(tenant, session))
                now = self.clock()
                turns = [turn_from_message(m, start + i, now) for i, m in enumerate(messages)]
                try:
                    self.store.append(tenant, session, turns)
                    break
                except InvalidInputError:
                    # Another process sharing the store appended meanwhile: take the new
                    # length and try again (a duplicate id given by the caller fails again).
                    if attempt == 4:
                        raise
            if self.slot_model is not None and self.extractors:
                slots = self.slots(session, tenant=tenant)
                for turn in turns:
                    for extractor in self.extractors:
                        values = extractor.extract(turn)
                        if values:
                            slots.update(values, turn_id=turn.id, timestamp=turn.timestamp)
                self.store.put_state(tenant, session, "slots", slots.to_json())
        self._maybe_summarize(tenant, session)
        return turns

    def segment(self, session: str, *, tenant: str = "default") -> str:
        """The session's current segment: ``session``, or ``session#n`` after
        :meth:`new_segment` (frameworks' ``clear``/``reset`` map to it)."""
        epoch = self.store.get_state(tenant, session, "epoch") or 0
        return session if not epoch else f"{session}#{epoch}"

    def new_segment(self, session: str, *, tenant: str = "default") -> str:
        """Start a new segment of ``session``: its earlier turns stay stored (the transcript is
        never destroyed) but no longer reach the model. Returns the new segment's name."""
        with self._session(tenant, session).lock:
            epoch = self.store.get_state(tenant, session, "epoch") or 0
            self.store.put_state(tenant, session, "epoch", epoch + 1)
        return self.segment(session, tenant=tenant)

    def turns(self, session: str, *, tenant: str = "default") -> list[Turn]:
        """The whole raw transcript of a session."""
        return self.store.turns(tenant, session)

    # ------------------------------------------------------------------ slots

    def slots(self, session: str, *, tenant: str = "default") -> SlotState:
        """The session's slot state (raises ConfigurationError without a slot model)."""
        if self.slot_model is None:
            raise ConfigurationError("this memory has no slot model")
        return SlotState.from_json(self.slot_model, self.store.get_state(tenant, session, "slots"))

    def set_slots(
        self, session: str, values: Mapping[str, Any], *, tenant: str = "default",
        turn_id: str | None = None,
    ) -> None:  # fmt: skip
        """Set slot values (validated; on error nothing changes)."""
        with self._session(tenant, session).lock:
            slots = self.slots(session, tenant=tenant)
            slots.update(values, turn_id=turn_id, timestamp=self.clock())
            self.store.put_state(tenant, session, "slots", slots.to_json())

    # ------------------------------------------------------------------ summary

    def summary(self, session: str, *, tenant: str = "default") -> RollingSummary:
        return RollingSummary.from_json(self.store.get_state(tenant, session, "summary"))

    def _maybe_summarize(self, tenant: str, session: str) -> None:
        state = self._session(tenant, session)
        if self._executor is not None:
            with self._lock:
                if state.pending is None or state.pending.done():
                    state.pending = self._executor.submit(self._summarize_quietly, tenant, session)
                else:
                    state.dirty = True  # run again when the current update finishes
            return
        self.update_summary(session, tenant=tenant)

    def update_summary(
        self, session: str, *, tenant: str = "default", force: bool = False
    ) -> RollingSummary:
        """Summarize the older turns not yet summarized, if they pass the threshold (or
        ``force``). A failure is logged and kept in ``ContextPack.summary_error``; the raw turns
        stay in play and nothing is lost."""
        state = self._session(tenant, session)
        previous = self.summary(session, tenant=tenant)
        turns = self.store.turns(tenant, session)
        end = max(previous.covered, len(turns) - self.keep_recent)
        pending = turns[previous.covered : end]
        if not pending:
            return previous
        size = sum(self.counter(t.content) for t in pending)
        if size < self.summarize_after and not force:
            return previous
        try:
            items = self.summarizer.summarize(previous, pending)
        except Exception as exc:
            state.summary_error = f"{type(exc).__name__}: {exc}"
            logger.warning("tokenlean: summarization failed; raw turns stay in play (%s)", exc)
            return previous
        state.summary_error = None
        updated = RollingSummary(tuple(items), end)
        if self.collector is not None:
            previous_sources = {s for i in previous.items for s in i.sources}
            new_tokens = sum(
                self.counter(i.text) for i in items if not set(i.sources) <= previous_sources
            )
            self.collector.record_summary(size, new_tokens)
        self.store.put_state(tenant, session, "summary", updated.to_json())
        return updated

    def _summarize_quietly(self, tenant: str, session: str) -> None:
        state = self._session(tenant, session)
        while True:
            self.update_summary(session, tenant=tenant)
            with self._lock:
                if not state.dirty:
                    return
                state.dirty = False

    def wait(self) -> None:
        """Wait for background summaries to finish."""
        with self._lock:
            pending = [s.pending for s in self._sessions.values() if s.pending is not None]
        for future in pending:
            future.result()

    # ------------------------------------------------------------------ retrieval of turns

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from tokenlean._embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def _turn_index(self, tenant: str, session: str, turns: Sequence[Turn]) -> HybridIndex:
        state = self._session(tenant, session)
        with state.lock:
            if state.index is None:
                state.index = HybridIndex(
                    embedder=self.embedder, splitter=SentenceSplitter(100_000, counter=self.counter)
                )
            new = [
                t for t in turns[state.indexed :] if t.role in ("user", "assistant") and t.content
            ]
            if new:
                state.index.add(
                    {"id": t.id, "text": f"{turn_label(t)}: {turn_text(t)}",
                     "metadata": {"index": t.index}}
                    for t in new
                )  # fmt: skip
            state.indexed = len(turns)
            return state.index

    # ------------------------------------------------------------------ assembly

    def context(
        self,
        session: str,
        *,
        budget: int,
        tenant: str = "default",
        system: str | None = None,
        user: str | None = None,
    ) -> ContextPack:
        """Assemble the context for the next model call.

        Args:
            session: the conversation.
            budget: the hard limit, in prompt tokens of the rendered messages.
            system: the system prompt (default: the transcript's system turns).
            user: the new user turn (default: the transcript's last turn, if a user turn).

        Raises:
            ConfigurationError: the budget cannot hold the pinned sections (system, state, user).
        """
        turns = self.store.turns(tenant, session)
        state = self._session(tenant, session)
        system_turns = [t for t in turns if t.role in ("system", "developer")]
        history = [t for t in turns if t.role not in ("system", "developer")]
        user_turn: Turn | None = None
        if user is None and history and history[-1].role == "user":
            user_turn, history = history[-1], history[:-1]
            user = user_turn.content
        count = self.counter
        system_text = system if system is not None else "\n\n".join(t.content for t in system_turns)
        pinned: list[PackItem] = []
        system_sources = tuple(t.id for t in system_turns) if system is None else ()
        if system_text:
            pinned.append(PackItem("system", system_text, count(system_text), system_sources))
        if self.slot_model is not None:
            slots = self.slots(session, tenant=tenant)
            rendered = slots.render()
            if rendered:
                text = f"Conversation state:\n{rendered}"
                pinned.append(PackItem("state", text, count(text), slots.sources()))
        user_item = None
        if user is not None:
            user_item = PackItem("user", user, count(user), (user_turn.id,) if user_turn else ())

        def ranking() -> list[str]:
            searcher = HybridSearcher(self._turn_index(tenant, session, turns), candidates=60)
            return [hit.chunk.doc_id for hit in searcher.search(user or "", k=80)]

        out = assemble(
            budget=budget,
            count=count,
            history=history,
            pinned=pinned,
            user=user_item,
            summary=self.summary(session, tenant=tenant),
            ranking=ranking,
            shares=self.shares,
        )
        return ContextPack(
            messages=out.messages,
            items=out.items,
            budget=budget,
            tokens=out.tokens,
            summary_error=state.summary_error,
        )

    async def acontext(
        self, session: str, *, budget: int, tenant: str = "default", system: str | None = None,
        user: str | None = None,
    ) -> ContextPack:  # fmt: skip
        """:meth:`context` off the event loop."""
        return await asyncio.to_thread(
            self.context, session, budget=budget, tenant=tenant, system=system, user=user
        )

    async def aadd(
        self, session: str, messages: Sequence[Mapping[str, Any]], *, tenant: str = "default"
    ) -> list[Turn]:
        """:meth:`add` off the event loop."""
        return await asyncio.to_thread(self.add, session, messages, tenant=tenant)

    def close(self) -> None:
        """Finish background work."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
