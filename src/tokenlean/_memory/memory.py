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

from pydantic import BaseModel, Field

from tokenlean._config import FrozenModel
from tokenlean._embeddings import Embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._memory.slots import SlotExtractor, SlotState
from tokenlean._memory.summary import ExtractiveSummarizer, RollingSummary, Summarizer, turn_label
from tokenlean._memory.transcript import (
    MemoryTranscriptStore,
    TranscriptStore,
    Turn,
    turn_from_message,
)
from tokenlean._messages import count_message_tokens
from tokenlean._retrieval.documents import SentenceSplitter, key_terms
from tokenlean._retrieval.index import HybridIndex
from tokenlean._retrieval.search import HybridSearcher
from tokenlean._tokens import get_token_counter

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsCollector

__all__ = ["ContextPack", "ConversationMemory", "MemoryBudget", "PackItem"]

logger = logging.getLogger("tokenlean.memory")


class MemoryBudget(FrozenModel):
    """How the budget left after the pinned sections is shared (each share of that rest)."""

    recent: float = Field(default=0.2, ge=0, le=1)
    summary: float = Field(default=0.1, ge=0, le=1)
    retrieved: float = Field(default=0.7, ge=0, le=1)
    min_recent_turns: int = Field(default=2, ge=0, description="Kept even past the share.")
    neighbours: int = Field(default=1, ge=0, description="Turns around a retrieved turn.")


@dataclass(frozen=True)
class PackItem:
    """One piece of the context: its section, text, tokens and the turn ids it came from."""

    section: str
    text: str
    tokens: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class ContextPack:
    """The context for one model call, and why each part of it is there.

    Attributes:
        messages: OpenAI-style messages to send.
        items: every piece, by section (``system``, ``state``, ``summary``, ``retrieved``,
            ``recent``, ``user``), with its tokens and provenance.
        budget: the limit.
        tokens: prompt tokens of ``messages`` (``count_message_tokens``); never above budget.
        summary_error: the last summarization failure, if any (raw turns stayed in play).
    """

    messages: list[dict[str, Any]]
    items: tuple[PackItem, ...]
    budget: int
    tokens: int
    summary_error: str | None = None

    def sources(self) -> set[str]:
        """Ids of every turn that is in the context, raw or through an item derived from it."""
        return {source for item in self.items for source in item.sources}

    def section_tokens(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.section] = out.get(item.section, 0) + item.tokens
        return out


@dataclass
class _Session:
    index: HybridIndex | None = None
    indexed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: Future[None] | None = None  # a background summary update
    dirty: bool = False  # new turns arrived while it ran
    summary_error: str | None = None


def _groups(turns: Sequence[Turn]) -> list[list[Turn]]:
    """Turns grouped so that a tool call and its results are never split."""
    groups: list[list[Turn]] = []
    for turn in turns:
        if (
            turn.role == "tool"
            and groups
            and (groups[-1][0].tool_calls or groups[-1][0].role == "tool")
        ):
            groups[-1].append(turn)
        else:
            groups.append([turn])
    return groups


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
        collector: MetricsCollector | None = None,
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
                    {"id": t.id, "text": f"{turn_label(t)}: {_turn_text(t)}",
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
        items: list[PackItem] = []
        system_sources = tuple(t.id for t in system_turns) if system is None else ()
        if system_text:
            items.append(PackItem("system", system_text, count(system_text), system_sources))
        if self.slot_model is not None:
            slots = self.slots(session, tenant=tenant)
            rendered = slots.render()
            if rendered:
                text = f"Conversation state:\n{rendered}"
                items.append(PackItem("state", text, count(text), slots.sources()))
        if user is not None:
            items.append(PackItem("user", user, count(user),
                                  (user_turn.id,) if user_turn else ()))  # fmt: skip

        pinned = _render(items, [])
        pinned_tokens = count_message_tokens(pinned, counter=count).total
        if pinned_tokens > budget:
            raise ConfigurationError(
                f"budget {budget} cannot hold the pinned sections ({pinned_tokens} tokens: "
                "system prompt, state and user turn)"
            )
        rest = budget - pinned_tokens - 16  # section headers and message overheads
        shares = self.shares

        # Recent turns, in tool-call-safe groups, newest first.
        groups = _groups(history)
        recent_groups: list[list[Turn]] = []
        allowance = int(rest * shares.recent)
        used = kept = 0
        for group in reversed(groups):
            cost = sum(count(t.content) + 4 for t in group)
            if used + cost > allowance and kept >= shares.min_recent_turns:
                break
            if used + cost > rest:
                break
            recent_groups.insert(0, group)
            used += cost
            kept += len(group)
        carry = allowance - used
        recent = [t for g in recent_groups for t in g]
        recent_ids = {t.id for t in recent}

        # Rolling summary items (newest coverage first when trimming), skipping recent turns.
        summary = self.summary(session, tenant=tenant)
        summary_allowance = int(rest * shares.summary) + max(carry, 0)
        spent = 0
        # Items that share terms with the user turn first, then the most recent.
        terms = _terms(user or "")
        order = sorted(
            range(len(summary.items)),
            key=lambda i: (-len(terms & _terms(summary.items[i].text)), -i),
        )
        chosen_items: dict[int, PackItem] = {}
        for i in order:
            item = summary.items[i]
            if set(item.sources) <= recent_ids:
                continue
            cost = count(item.text) + 1
            if spent + cost > summary_allowance:
                continue
            chosen_items[i] = PackItem("summary", item.text, cost - 1, item.sources)
            spent += cost
        summary_items: list[PackItem] = [chosen_items[i] for i in sorted(chosen_items)]
        carry = summary_allowance - spent

        # Retrieved older turns, with their neighbours.
        retrieved_allowance = int(rest * shares.retrieved) + max(carry, 0)
        older = [t for t in history if t.id not in recent_ids]
        retrieved: list[PackItem] = []
        if older and user and retrieved_allowance > 0:
            index = self._turn_index(tenant, session, turns)
            searcher = HybridSearcher(index, candidates=60)
            hits = searcher.search(user, k=80)
            by_id = {t.id: t for t in older}
            position = {t.id: i for i, t in enumerate(older)}
            chosen: dict[str, PackItem] = {}
            spent = 0

            def take(turn: Turn) -> bool:
                nonlocal spent
                if turn.id in chosen or turn.id in recent_ids:
                    return False
                text = _retrieved_text(turn)
                cost = count(text) + 1
                if spent + cost > retrieved_allowance:
                    return False
                chosen[turn.id] = PackItem("retrieved", text, cost - 1, (turn.id,))
                spent += cost
                return True

            top = [by_id[h.chunk.doc_id] for h in hits if h.chunk.doc_id in by_id]
            for turn in top:
                take(turn)
            for turn in top[:5]:
                at = position[turn.id]
                for step in range(1, shares.neighbours + 1):
                    for near in (at - step, at + step):
                        if 0 <= near < len(older):
                            take(older[near])
            retrieved = sorted(chosen.values(), key=lambda item: by_id[item.sources[0]].index)

        # Whatever is left extends the recent window further back.
        left = (
            rest
            - used
            - sum(i.tokens + 1 for i in summary_items)
            - sum(i.tokens + 1 for i in retrieved)
        )
        taken = {i.sources[0] for i in retrieved}
        for group in reversed(groups[: len(groups) - len(recent_groups)]):
            cost = sum(count(t.content) + 4 for t in group)
            if cost > left or any(t.id in taken for t in group):
                break
            recent_groups.insert(0, group)
            left -= cost
        recent = [t for g in recent_groups for t in g]
        final_recent = {t.id for t in recent}
        # Summary items whose turns are now all in the recent window would say them twice.
        summary_items = [i for i in summary_items if not set(i.sources) <= final_recent]

        all_items = [*(items[:-1] if user is not None else items), *summary_items, *retrieved]
        user_items = [items[-1]] if user is not None else []
        messages = _render([*all_items, *user_items], recent)
        total = count_message_tokens(messages, counter=count).total
        # Verify against the real count: drop the least important pieces until it fits.
        while total > budget:
            if retrieved:
                retrieved.pop(0)
            elif summary_items:
                summary_items.pop(0)
            elif len(recent) > 0:
                recent = recent[1:]
                while recent and recent[0].role == "tool":
                    recent = recent[1:]
            else:  # pragma: no cover - the pinned check above makes this unreachable
                break
            all_items = [*(items[:-1] if user is not None else items), *summary_items, *retrieved]
            messages = _render([*all_items, *user_items], recent)
            total = count_message_tokens(messages, counter=count).total
        recent_items = [PackItem("recent", t.content, count(t.content), (t.id,)) for t in recent]
        return ContextPack(
            messages=messages,
            items=(*all_items, *recent_items, *user_items),
            budget=budget,
            tokens=total,
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


_COMMON = frozenset(  # all shorter than six letters: a key-term prefix equals the word
    [
        "the",
        "and",
        "was",
        "what",
        "did",
        "for",
        "with",
        "that",
        "this",
        "you",
        "have",
        "from",
        "when",
        "how",
        "who",
    ]
)


def _terms(text: str) -> set[str]:
    return key_terms(text) - _COMMON


def _turn_text(turn: Turn) -> str:
    caption = turn.metadata.get("caption") if turn.metadata else None
    return f"{turn.content} [shared an image: {caption}]" if caption else turn.content


def _retrieved_text(turn: Turn) -> str:
    # The label is the turn's position, not its id: ids can be UUIDs (LangChain message ids cost
    # ~30 tokens each). The full id stays in the pack item's sources.
    return f"[#{turn.index}] {turn_label(turn)}: {_turn_text(turn)}"


def _render(items: Sequence[PackItem], recent: Sequence[Turn]) -> list[dict[str, Any]]:
    sections: dict[str, list[str]] = {}
    for item in items:
        sections.setdefault(item.section, []).append(item.text)
    parts = []
    if "system" in sections:
        parts.append("\n\n".join(sections["system"]))
    if "state" in sections:
        parts.extend(sections["state"])
    if "summary" in sections:
        parts.append(
            "Summary of the earlier conversation:\n"
            + "\n".join(f"- {t}" for t in sections["summary"])
        )
    if "retrieved" in sections:
        parts.append("Relevant earlier turns:\n" + "\n".join(sections["retrieved"]))
    messages: list[dict[str, Any]] = []
    if parts:
        messages.append({"role": "system", "content": "\n\n".join(parts)})
    messages.extend(turn.to_message() for turn in recent)
    if "user" in sections:
        messages.append({"role": "user", "content": sections["user"][-1]})
    return messages
