"""``ConversationMemory``: the cheapest context that keeps the answer right, under one budget.

For each model call it assembles a :class:`ContextPack` from the raw transcript (which it never
changes): the system prompt and the slot state (pinned), the user turn (pinned), then recent
turns, the rolling summary and retrieved older turns, each within its share of the budget.
Unused share flows to the next section; whatever is left at the end extends the recent window.
The rendered messages never exceed the budget, and every item says which turns it came from.

Writes are all or nothing and idempotent: :meth:`~ConversationMemory.add` stores a batch in
one append or not at all, recognises a retry of a batch it already stored, and never raises for
what runs after the turns are stored (slot extraction, the summary): a failure there is recorded
on the session. Reads degrade: when retrieval fails, the context is built from the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from tokenlean._embeddings import Embedder, as_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError, MalformedRequestError
from tokenlean._extras import require
from tokenlean._memory.appending import append_once
from tokenlean._memory.assembly import (
    Assembly,
    ContextPack,
    MemoryBudget,
    PackItem,
    assemble,
    check_budget,
)
from tokenlean._memory.calls import DeadlineCalls
from tokenlean._memory.older_turns import rank_older_turns, turn_documents
from tokenlean._memory.sessions import SessionState, SessionStates
from tokenlean._memory.slots import SlotExtractor, SlotState
from tokenlean._memory.stored_history import StoredHistory, SystemTurns
from tokenlean._memory.summary import (
    ExtractiveSummarizer,
    RollingSummary,
    Summarizer,
    SummaryItem,
)
from tokenlean._memory.transcript import TranscriptStore, Turn, turn_from_message
from tokenlean._memory.turn_vectors import TurnVectors
from tokenlean._memory.uri import transcript_store_from
from tokenlean._retrieval.documents import SentenceSplitter
from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.search import Reranker
from tokenlean._tokens.counting import get_token_counter

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["ConversationMemory"]

logger = logging.getLogger("tokenlean.memory")


class ConversationMemory:
    """Keeps every turn, and builds a budgeted context for each model call. Thread-safe.

    Args:
        store: the transcripts (default: in memory; :class:`SQLiteTranscriptStore` persists),
            or a store URI (``sqlite:///path.db``, ``redis://host:port/db``; see
            :func:`open_transcript_store`).
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
        max_sessions: sessions whose in-process state (retrieval index, counts, last errors)
            is kept; past it the least recently used is dropped and rebuilt from the store
            when next used.
        call_timeout_s: how long a summary update or a batch's slot extraction may take; a
            call past it is abandoned and recorded as the session's error (None: no limit,
            and the calls run in the caller's thread).
        reranker: rescores the older turns' fused candidates for the user turn (about 60 to
            120 of them, in each of the two retrieval rounds): ``"default"`` is the offline
            :class:`~tokenlean.LexicalSemanticReranker`; a stronger model, such as a
            :class:`~tokenlean.CrossEncoderReranker` on weights you have, ranks the evidence
            better at the price of its inference; ``None`` keeps the fusion order. A reranker
            that raises leaves that pack without retrieved turns (``degraded``).

    Raises:
        ConfigurationError: ``max_sessions`` below 1, ``call_timeout_s`` not positive, or a
            ``reranker`` without a ``rerank`` method.

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

        A retried ``add`` stores nothing twice:

        >>> again = [{"role": "user", "content": "Question 29 about shipping times?"},
        ...          {"role": "assistant", "content": "Answer 29: two to three days."}]
        >>> [t.id for t in memory.add("s1", again)], memory.count("s1")
        (['t60', 't61'], 62)
    """

    def __init__(
        self,
        store: TranscriptStore | str | None = None,
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
        max_sessions: int = 1024,
        call_timeout_s: float | None = 10.0,
        reranker: Reranker | Literal["default"] | None = "default",
    ) -> None:
        if reranker is not None and reranker != "default" and not isinstance(reranker, Reranker):
            raise ConfigurationError(
                f"reranker must be 'default', None or have a rerank(query, candidates) method, "
                f"not {type(reranker).__name__}"
            )
        if max_sessions < 1:
            raise ConfigurationError(f"max_sessions must be at least 1, not {max_sessions}")
        if call_timeout_s is not None and not call_timeout_s > 0:
            raise ConfigurationError(f"call_timeout_s must be positive, not {call_timeout_s}")
        # Older turns are found through a hybrid (BM25 + dense) index: name every missing extra
        # now, not at the first long conversation.
        require(
            *(("retrieval",) if embedder is not None else ("retrieval", "embeddings")),
            what="ConversationMemory's retrieval of older turns",
        )
        self.collector = collector
        self.store: TranscriptStore = transcript_store_from(store)
        self._embedder = as_embedder(embedder) if embedder is not None else None
        self.counter = counter or get_token_counter()
        self.summarizer = summarizer or ExtractiveSummarizer(counter=self.counter)
        self.slot_model = slots
        self.extractors = list(extractors)
        self.shares = budget or MemoryBudget()
        self.reranker = reranker
        self.summarize_after = summarize_after
        self.keep_recent = keep_recent
        self.clock = clock
        self._states = SessionStates(max_sessions)
        self._calls = DeadlineCalls(call_timeout_s)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1) if background else None
        self._background: dict[tuple[str, str], Future[None]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._system_turns: dict[tuple[str, str], tuple[SessionState, SystemTurns]] = {}

    @property
    def max_sessions(self) -> int:
        return self._states.max_sessions

    @property
    def call_timeout_s(self) -> float | None:
        return self._calls.timeout

    # ------------------------------------------------------------------ writing

    def _state(self, tenant: str, session: str) -> SessionState:
        _check_ids(tenant, session)
        return self._states.get((tenant, session))

    def add(
        self, session: str, messages: Sequence[Mapping[str, Any]], *, tenant: str = "default"
    ) -> list[Turn]:
        """Append messages to the session's transcript; return their turns.

        All or nothing: every message is validated first, and the batch is stored in one
        append (if anything is refused, nothing is stored). Idempotent: a message whose
        ``id`` is already in the session, as the same message, is not stored again; a batch
        without ids that repeats the session's latest turns exactly (a retry of the ``add``
        that stored them) stores nothing. Either way its stored turns are returned, so an
        ``add`` whose outcome is unknown can simply be retried. Messages without an ``id``
        get ``"t{index}"``; give ids to keep two identical batches in a row apart.

        Nothing raises once the turns are stored: a failing or rejected slot extraction and a
        failing or late summary update are recorded on the session (:meth:`errors`, and the
        next :class:`ContextPack`), and the next ``add`` runs them again.

        Raises:
            MalformedRequestError: messages that are not a list of message objects, or a
                message without a valid role or with non-text content.
            ConfigurationError: a tenant or session that is not a non-empty string.
            InvalidInputError: an id already in the session for another message, an id twice
                in the batch, or text or metadata the store refuses (nothing is stored).
            StoreError: the store failed before the turns were stored (nothing is stored).
        """
        state = self._state(tenant, session)
        if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, Iterable):
            raise MalformedRequestError(
                f"messages must be a list of message objects, not {type(messages).__name__}"
            )
        messages = list(messages)
        now = self.clock()
        batch = [turn_from_message(message, i, now) for i, message in enumerate(messages)]
        if not batch:
            return []
        with state.lock:
            turns, new = append_once(self.store, tenant, session, messages, batch)
            if new and self.slot_model is not None and self.extractors:
                self._extract_slots(tenant, session, state, new)
        if new:
            self._after_append(tenant, session, state, new[-1].index + 1)
        return turns

    def _extract_slots(
        self, tenant: str, session: str, state: SessionState, turns: list[Turn]
    ) -> None:
        """Run the extractors on new turns (in a worker, with the deadline) and apply what the
        slot model accepts; record what failed as the session's ``slot_error``."""
        extractors = list(self.extractors)

        def propose() -> list[tuple[Turn, dict[str, Any] | Exception]]:
            proposals: list[tuple[Turn, dict[str, Any] | Exception]] = []
            for turn in turns:
                for extractor in extractors:
                    try:
                        values = dict(extractor.extract(turn) or {})
                    except Exception as exc:
                        proposals.append((turn, exc))
                        continue
                    if values:
                        proposals.append((turn, values))
            return proposals

        problems: list[str] = []
        try:
            proposals = self._calls.run((tenant, session, "slots"), propose)
            for turn, proposal in proposals:
                if isinstance(proposal, Exception):
                    problems.append(f"{_describe(proposal)} (an extractor, turn {turn.id!r})")
            rejected: list[str] = []

            def apply(slots: SlotState) -> None:
                rejected.clear()  # a store may run this again after a concurrent update
                for turn, proposal in proposals:
                    if isinstance(proposal, Exception):
                        continue
                    try:
                        slots.update(proposal, turn_id=turn.id, timestamp=turn.timestamp)
                    except InvalidInputError:  # the values are not repeated: maybe personal
                        rejected.append(
                            f"InvalidInputError: the slot model rejected {sorted(proposal)} "
                            f"from turn {turn.id!r}"
                        )

            if any(not isinstance(proposal, Exception) for _, proposal in proposals):
                self._write_slots(tenant, session, apply)
            problems.extend(rejected)
        except Exception as exc:
            problems.append(f"{_describe(exc)} (slot extraction)")
        state.slot_error = "; ".join(problems) if problems else None
        if problems:
            logger.warning("tokenlean: slots of session %r not fully updated: %s", session,
                           state.slot_error)  # fmt: skip

    def count(self, session: str, *, tenant: str = "default") -> int:
        """How many turns the session holds (no turn is read)."""
        _check_ids(tenant, session)
        return self.store.count(tenant, session)

    def errors(self, session: str, *, tenant: str = "default") -> dict[str, str]:
        """The session's recorded failures since their step last succeeded in this process:
        ``summary_error``, ``slot_error``, ``index_error`` (only those set)."""
        _check_ids(tenant, session)
        state = self._states.peek((tenant, session))
        return state.errors() if state is not None else {}

    def release(self, session: str, *, tenant: str = "default") -> None:
        """Drop the in-process state of a session and its segments (the retrieval index, the
        counts, the recorded errors). Nothing stored changes; the next use rebuilds it."""
        _check_ids(tenant, session)
        self._states.release(tenant, session)

    def segment(self, session: str, *, tenant: str = "default") -> str:
        """The session's current segment: ``session``, or ``session#n`` after
        :meth:`new_segment` (frameworks' ``clear``/``reset`` map to it)."""
        _check_ids(tenant, session)
        epoch = self.store.get_state(tenant, session, "epoch") or 0
        return session if not epoch else f"{session}#{epoch}"

    def new_segment(self, session: str, *, tenant: str = "default") -> str:
        """Start a new segment of ``session``: its earlier turns stay stored (the transcript is
        never destroyed) but no longer reach the model. Returns the new segment's name."""
        with self._state(tenant, session).lock:
            epoch = self.store.get_state(tenant, session, "epoch") or 0
            self.store.put_state(tenant, session, "epoch", epoch + 1)
        return self.segment(session, tenant=tenant)

    def turns(self, session: str, *, tenant: str = "default") -> list[Turn]:
        """The whole raw transcript of a session."""
        _check_ids(tenant, session)
        return self.store.turns(tenant, session)

    # ------------------------------------------------------------------ slots

    def slots(self, session: str, *, tenant: str = "default") -> SlotState:
        """The session's slot state (raises ConfigurationError without a slot model)."""
        if self.slot_model is None:
            raise ConfigurationError("this memory has no slot model")
        _check_ids(tenant, session)
        return SlotState.from_json(self.slot_model, self.store.get_state(tenant, session, "slots"))

    def set_slots(
        self, session: str, values: Mapping[str, Any], *, tenant: str = "default",
        turn_id: str | None = None,
    ) -> None:  # fmt: skip
        """Set slot values directly.

        Raises:
            InvalidInputError: a value the slot model rejects, or an unknown slot (nothing
                changes).
        """
        now = self.clock()
        with self._state(tenant, session).lock:
            self._write_slots(
                tenant, session, lambda slots: slots.update(values, turn_id=turn_id, timestamp=now)
            )

    def _write_slots(self, tenant: str, session: str, apply: Callable[[SlotState], Any]) -> None:
        """Read the slots, ``apply`` a change, write them back; through the store's
        ``update_state`` when it has one (one transaction, or compare-and-set: a concurrent
        update by another process or replica is never lost), else a read and a write."""
        model = self.slot_model
        if model is None:
            raise ConfigurationError("this memory has no slot model")

        def change(current: Any) -> Any:
            slots = SlotState.from_json(model, current)
            apply(slots)
            return slots.to_json()

        update = getattr(self.store, "update_state", None)
        if callable(update):
            update(tenant, session, "slots", change)
        else:
            self.store.put_state(
                tenant, session, "slots", change(self.store.get_state(tenant, session, "slots"))
            )

    # ------------------------------------------------------------------ summary

    def summary(self, session: str, *, tenant: str = "default") -> RollingSummary:
        """The session's rolling summary (empty before its first update)."""
        _check_ids(tenant, session)
        return RollingSummary.from_json(self.store.get_state(tenant, session, "summary"))

    def _after_append(self, tenant: str, session: str, state: SessionState, count: int) -> None:
        if self._executor is not None:
            key = (tenant, session)
            with self._lock:
                running = self._background.get(key)
                if running is not None and not running.done():
                    self._dirty.add(key)  # run again when the current update finishes
                else:
                    self._background[key] = self._executor.submit(
                        self._summarize_in_background, tenant, session
                    )
            return
        if state.summary_lock.acquire(blocking=False):  # else another thread is at it
            try:
                self._update_summary(tenant, session, state, count, force=False)
            finally:
                state.summary_lock.release()

    def update_summary(
        self, session: str, *, tenant: str = "default", force: bool = False
    ) -> RollingSummary:
        """Summarize the older turns not yet summarized, if they pass the threshold (or
        ``force``), and return the summary. Reads only the turns not summarized yet. A failure
        (the summarizer raising, answering late or with something other than summary items,
        the store failing) is logged and kept as the session's ``summary_error``; the raw
        turns stay in play, nothing is lost, and the summary is returned unchanged."""
        state = self._state(tenant, session)
        with state.summary_lock:
            return self._update_summary(tenant, session, state, None, force=force)

    def _update_summary(
        self, tenant: str, session: str, state: SessionState, count: int | None, *, force: bool
    ) -> RollingSummary:
        """The summary update; the caller holds ``state.summary_lock``. Never raises."""
        previous = RollingSummary()
        try:
            previous = self.summary(session, tenant=tenant)
            if count is None:
                count = self.store.count(tenant, session)
            covered = previous.covered
            end = max(covered, count - self.keep_recent)
            if state.counted_from != covered or not covered <= state.counted_to <= end:
                # First use, or another process moved the summary: count from its end.
                state.counted_from = state.counted_to = covered
                state.pending_tokens = state.retry_tokens = 0
            if end > state.counted_to:
                newly = self.store.turns(tenant, session, state.counted_to, end)
                state.pending_tokens += sum(self.counter(t.content) for t in newly)
                state.counted_to = end
            size = state.pending_tokens
            if end == covered or (
                not force and size < max(self.summarize_after, state.retry_tokens)
            ):
                return previous
            pending = self.store.turns(tenant, session, covered, end)
            summarizer = self.summarizer
            items = self._calls.run(
                (tenant, session, "summary"), lambda: list(summarizer.summarize(previous, pending))
            )
            if not all(isinstance(item, SummaryItem) for item in items):
                raise TypeError(f"{type(summarizer).__name__} returned something other than "
                                "summary items")  # fmt: skip
            updated = RollingSummary(tuple(items), end)
            update = getattr(self.store, "update_state", None)
            if callable(update):
                # Another process may have summarized meanwhile: the summary that covers more
                # turns stays (no replica moves it back).
                stored = update(
                    tenant, session, "summary",
                    lambda current: current
                    if RollingSummary.from_json(current).covered >= end
                    else updated.to_json(),
                )  # fmt: skip
                updated = RollingSummary.from_json(stored)
                end = updated.covered
            else:
                self.store.put_state(tenant, session, "summary", updated.to_json())
        except Exception as exc:
            state.summary_error = _describe(exc)
            state.retry_tokens = 2 * state.pending_tokens  # try again once it has doubled
            logger.warning(
                "tokenlean: summary of session %r not updated; raw turns stay in play (%s)",
                session, state.summary_error,
            )  # fmt: skip
            return previous
        state.summary_error = None
        state.counted_from = state.counted_to = end
        state.pending_tokens = state.retry_tokens = 0
        if self.collector is not None:
            previous_sources = {s for i in previous.items for s in i.sources}
            new_tokens = sum(
                self.counter(i.text) for i in items if not set(i.sources) <= previous_sources
            )
            self.collector.record_summary(size, new_tokens)
        return updated

    def _summarize_in_background(self, tenant: str, session: str) -> None:
        key = (tenant, session)
        while True:
            state = self._states.get(key)
            with state.summary_lock:
                self._update_summary(tenant, session, state, None, force=False)
            with self._lock:
                if key not in self._dirty:
                    self._background.pop(key, None)
                    return
                self._dirty.discard(key)

    def wait(self) -> None:
        """Wait for background summaries to finish."""
        with self._lock:
            pending = list(self._background.values())
        for future in pending:
            future.result()

    # ------------------------------------------------------------------ retrieval of turns

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from tokenlean._embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def _turn_index(self, state: SessionState, tenant: str, session: str, end: int) -> HybridIndex:
        """The session's retrieval index, with the turns below ``end`` it has not seen added
        (read from the store and embedded; see :func:`turn_documents`)."""
        with state.index_lock:
            if state.index is None:
                state.index = HybridIndex(
                    embedder=self.embedder, splitter=SentenceSplitter(100_000, counter=self.counter)
                )
            if end > state.indexed:
                documents, replied_to = turn_documents(
                    self.store.turns(tenant, session, state.indexed, end), state.replied_to
                )
                if documents:
                    TurnVectors(self.store, self.embedder).index(
                        state.index, tenant, session, documents
                    )
                state.indexed, state.replied_to = end, replied_to
            return state.index

    def _system_turns_below(
        self, state: SessionState, tenant: str, session: str, end: int
    ) -> list[Turn]:
        """The session's system and developer turns below ``end``: only the turns not scanned
        before are read (the list is kept with the session's state and dropped with it)."""
        key = (tenant, session)
        with self._lock:
            entry = self._system_turns.get(key)
            if entry is None or entry[0] is not state:
                entry = self._system_turns[key] = (state, SystemTurns())
                if len(self._system_turns) > 2 * self.max_sessions:  # drop evicted sessions'
                    for other, (held, _) in list(self._system_turns.items()):
                        if self._states.peek(other) is not held:
                            del self._system_turns[other]
        known = entry[1]
        with state.index_lock:
            if end > known.scanned:
                known.turns.extend(
                    t
                    for t in self.store.turns(tenant, session, known.scanned, end)
                    if t.role in ("system", "developer")
                )
                known.scanned = end
            return [t for t in known.turns if t.index < end]

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

        It degrades instead of failing: when retrieval fails (the embedder or the index), when
        the slot state or the summary cannot be read, the pack is built from the rest (recent
        turns first), names the sections left out in ``degraded`` and carries the error
        (``index_error``, ``slot_error``, ``summary_error``).

        Args:
            session: the conversation.
            budget: the hard limit, in prompt tokens of the rendered messages.
            system: the system prompt (default: the transcript's system turns).
            user: the new user turn (default: the transcript's last turn, if a user turn).

        Raises:
            ConfigurationError: the budget is not a positive whole number of tokens, or cannot
                hold the pinned sections (system, state, user), or, without ``user``, the
                current turn (the last turn, and after tool results the calls and the user
                turn before them).
            StoreError: the transcript cannot be read.
        """
        check_budget(budget)
        state = self._state(tenant, session)
        end = self.store.count(tenant, session)
        system_turns = self._system_turns_below(state, tenant, session, end)
        degraded: list[str] = []
        history = StoredHistory(self.store, tenant, session, end, system_turns)
        user_turn: Turn | None = None
        if user is None and len(history) and history[-1].role == "user":
            user_turn = history[-1]
            history = history.before(user_turn.index)
            user = user_turn.content
        count = self.counter
        system_text = system if system is not None else "\n\n".join(t.content for t in system_turns)
        pinned: list[PackItem] = []
        system_sources = tuple(t.id for t in system_turns) if system is None else ()
        if system_text:
            pinned.append(PackItem("system", system_text, count(system_text), system_sources))
        if self.slot_model is not None:
            try:
                slots = self.slots(session, tenant=tenant)
            except Exception as exc:
                state.slot_error = _describe(exc)
                degraded.append("state")
                logger.warning("tokenlean: slot state of session %r left out (%s)", session,
                               state.slot_error)  # fmt: skip
            else:
                rendered = slots.render()
                if rendered:
                    text = f"Conversation state:\n{rendered}"
                    pinned.append(PackItem("state", text, count(text), slots.sources()))
        summary: RollingSummary | None = None
        try:
            summary = self.summary(session, tenant=tenant)
        except Exception as exc:
            state.summary_error = _describe(exc)
            degraded.append("summary")
            logger.warning("tokenlean: summary of session %r left out (%s)", session,
                           state.summary_error)  # fmt: skip
        user_item = None
        if user is not None:
            user_item = PackItem("user", user, count(user), (user_turn.id,) if user_turn else ())

        where: dict[str, int] = {}  # transcript index of each ranked turn
        # The user turn taken from the transcript is the question, not a turn to find: it would
        # match itself first and take a place among the best hits (their neighbours, the second
        # round's words).
        searched = user_turn.index if user_turn is not None else end

        def ranking() -> list[str]:
            try:
                index = self._turn_index(state, tenant, session, searched)
                hits = rank_older_turns(index, user or "", reranker=self.reranker)
            except Exception as exc:
                state.index_error = _describe(exc)
                degraded.append("retrieved")
                logger.warning("tokenlean: no retrieval for session %r; recent turns, summary "
                               "and slots only (%s)", session, state.index_error)  # fmt: skip
                return []
            state.index_error = None
            for hit in hits:
                where.setdefault(hit.chunk.doc_id, int(hit.chunk.metadata["index"]))
            return [hit.chunk.doc_id for hit in hits]

        def locate(ids: Sequence[str]) -> dict[str, int]:
            history.prefetch([i for i in ids if i in where])
            return {i: history.position_of(where[i]) for i in ids if i in where}

        def assembled(
            ranking: Sequence[str] | Callable[[], Sequence[str]], shares: MemoryBudget
        ) -> Assembly:
            return assemble(budget=budget, count=count, history=history, pinned=pinned,
                            user=user_item, summary=summary, ranking=ranking,
                            shares=shares, locate=locate)  # fmt: skip

        out = assembled(ranking, self.shares)
        if "retrieved" in degraded:
            # Without retrieval, the summary is the only view of older turns left: it takes
            # retrieval's share (what it does not use still extends the recent window).
            out = assembled((), self.shares.model_copy(update={
                "summary": min(1.0, self.shares.summary + self.shares.retrieved),
                "retrieved": 0.0,
            }))  # fmt: skip
        return ContextPack(
            messages=out.messages,
            items=out.items,
            budget=budget,
            tokens=out.tokens,
            summary_error=state.summary_error,
            slot_error=state.slot_error,
            index_error=state.index_error,
            degraded=tuple(degraded),
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
        self._calls.close()


def _check_ids(tenant: object, session: object) -> None:
    if not isinstance(tenant, str) or not isinstance(session, str) or not tenant or not session:
        raise ConfigurationError(
            f"tenant and session must be non-empty strings, not {tenant!r} and {session!r}"
        )


def _describe(exc: BaseException) -> str:
    """``Type: message``, the message cut to 300 characters."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"
