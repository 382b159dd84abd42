"""Memory under faults: writes are all or nothing and idempotent, what runs after a write is
recorded instead of raised, slow collaborators are cut off, reads degrade, and per-session state
is bounded."""

from __future__ import annotations

import contextvars
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import BaseModel, Field

import tokenlean as tl
from tokenlean.testing import FakeClock, HashingEmbedder
from tokenlean.testing._workers import run_workers


class Ticket(BaseModel):
    order_id: str | None = Field(default=None, pattern=r"^\d{4,}$")
    city: str | None = None


ORDER = tl.RegexExtractor("order_id", r"order #?(\w+)")
CITY = tl.RegexExtractor("city", r"ship to ([A-Z][a-z]+)")


def memory(**options: Any) -> tl.ConversationMemory:
    options.setdefault("embedder", HashingEmbedder(64))
    options.setdefault("clock", FakeClock())
    return tl.ConversationMemory(**options)


def pair(i: int, topic: str = "shipping") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"Question {i} about {topic}: where is order {1000 + i}?"},
        {"role": "assistant", "content": f"Answer {i}: order {1000 + i} ships from Lyon."},
    ]


def history(n: int) -> list[dict[str, Any]]:
    return [message for i in range(n) for message in pair(i)]


class Broken:
    """A collaborator that raises (a summarizer or an extractor)."""

    def summarize(self, previous: Any, turns: Any) -> Any:
        raise RuntimeError("model unavailable")

    def extract(self, turn: Any) -> Any:
        raise RuntimeError("extractor unavailable")


class Hung:
    """A collaborator that blocks until released (or 10 s, so old code cannot hang the run)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def summarize(self, previous: Any, turns: Any) -> Any:
        self.calls += 1
        self.release.wait(10)
        return list(previous.items)

    def extract(self, turn: Any) -> Any:
        self.calls += 1
        self.release.wait(10)
        return {}


class FlakyEmbedder(HashingEmbedder):
    """The fake embedder, failing while ``down``."""

    down = False

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self.down:
            raise tl.EmbeddingError("embedding service unavailable")
        return super().embed(texts)


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__(64)
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts += len(texts)
        return super().embed(texts)


# --- add(): all or nothing, idempotent -------------------------------------------------------


def test_a_caller_retrying_until_add_succeeds_stores_the_turns_once() -> None:
    """With a failing extractor and summarizer, add() still succeeds the first time: a caller
    that retries on errors stores each turn exactly once."""
    mem = memory(slots=Ticket, extractors=[Broken()], summarizer=Broken(), summarize_after=20,
                 keep_recent=2)  # fmt: skip
    for i in range(24):
        for _attempt in range(3):
            try:
                mem.add("s1", pair(i))
                break
            except Exception:
                continue
    turns = mem.turns("s1")
    assert len(turns) == 48
    assert [t.content for t in turns] == [m["content"] for m in history(24)]


def test_a_retried_batch_without_ids_is_not_stored_twice() -> None:
    """The same batch sent again right after it was stored (an add whose outcome the caller did
    not know) returns the stored turns and stores nothing."""
    mem = memory()
    mem.add("s1", history(3))
    first = mem.add("s1", pair(3))
    again = mem.add("s1", pair(3))
    assert again == first
    assert [t.id for t in again] == ["t6", "t7"]
    assert mem.count("s1") == 8


def test_a_retried_batch_with_ids_is_not_stored_twice() -> None:
    """Messages whose id is stored, as the same messages, are not stored again (wherever they
    are in the session); the batch's turns come back in batch order."""
    mem = memory()
    batch = [{**m, "id": f"msg-{i}"} for i, m in enumerate(pair(0))]
    first = mem.add("s1", batch)
    mem.add("s1", pair(1))
    assert mem.add("s1", batch) == first
    # A batch mixing stored and new messages stores only the new ones, in order.
    mixed = [*batch, {"role": "user", "content": "And a new question?", "id": "msg-2"}]
    turns = mem.add("s1", mixed)
    assert [t.id for t in turns] == ["msg-0", "msg-1", "msg-2"]
    assert [t.index for t in turns] == [0, 1, 4]
    assert mem.count("s1") == 5


def test_an_id_reused_for_another_message_is_refused_and_nothing_is_stored() -> None:
    """An id already in the session for a different message raises InvalidInputError; none of
    the batch is stored."""
    mem = memory()
    mem.add("s1", [{"role": "user", "content": "Where is order 1234?", "id": "m1"}])
    clash = [{"role": "user", "content": "new one", "id": "m2"},
             {"role": "user", "content": "something else", "id": "m1"}]  # fmt: skip
    with pytest.raises(tl.InvalidInputError, match="m1"):
        mem.add("s1", clash)
    assert [t.id for t in mem.turns("s1")] == ["m1"]


def test_only_a_repeat_of_the_latest_turns_counts_as_a_retry() -> None:
    """A batch without ids equal to an earlier (not the latest) batch is new; identical batches
    in a row are kept apart by their ids."""
    mem = memory()
    mem.add("s1", pair(0))
    mem.add("s1", pair(1))
    mem.add("s1", pair(0))
    assert mem.count("s1") == 6
    mem.add("s1", [{"role": "user", "content": "Thanks!", "id": "a"}])
    mem.add("s1", [{"role": "user", "content": "Thanks!", "id": "b"}])
    assert mem.count("s1") == 8


def test_a_malformed_message_stores_nothing_and_the_session_goes_on() -> None:
    """Validation happens before storing: a bad message raises MalformedRequestError, no turn
    of its batch is stored, and the next add works."""
    mem = memory()
    mem.add("s1", pair(0))
    with pytest.raises(tl.MalformedRequestError):
        mem.add("s1", [*pair(1), {"role": "robot", "content": "x"}])
    assert mem.count("s1") == 2
    mem.add("s1", pair(1))
    assert mem.count("s1") == 4


# --- failures after the turns are stored are recorded, never raised ---------------------------


def test_a_failing_extractor_is_recorded_and_later_adds_keep_working() -> None:
    """An extractor that raises is the session's slot_error (on errors() and on the pack); the
    other extractors' values still apply, and the error clears once extraction succeeds."""

    class FailsOnce:
        failures = 1

        def extract(self, turn: tl.Turn) -> dict[str, Any]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("extractor timed out upstream")
            return {}

    mem = memory(slots=Ticket, extractors=[FailsOnce(), CITY])
    turns = mem.add("s1", [{"role": "user", "content": "Please ship to Paris."}])
    assert len(turns) == 1
    error = mem.errors("s1")["slot_error"]
    assert "RuntimeError: extractor timed out upstream" in error
    assert mem.slots("s1").current.city == "Paris"
    assert mem.context("s1", budget=300, user="hi").slot_error == error
    mem.add("s1", [{"role": "user", "content": "Actually ship to Lyon."}])
    assert "slot_error" not in mem.errors("s1")
    assert mem.slots("s1").current.city == "Lyon"
    assert mem.context("s1", budget=300, user="hi").slot_error is None


def test_a_rejected_slot_value_is_recorded_not_raised_and_changes_nothing() -> None:
    """A value the slot model rejects is a recorded slot_error naming the slot (not its value):
    the turn is stored, that slot keeps its value, and the batch's valid values apply."""
    mem = memory(slots=Ticket, extractors=[ORDER, CITY])
    mem.add("s1", [{"role": "user", "content": "Ship to Paris, order #1234."}])
    turns = mem.add("s1", [{"role": "user", "content": "It is order #abc, ship to Lyon."}])
    assert [t.index for t in turns] == [1]
    error = mem.errors("s1")["slot_error"]
    assert "InvalidInputError" in error
    assert "order_id" in error
    assert "abc" not in error
    slots = mem.slots("s1").current
    assert (slots.order_id, slots.city) == ("1234", "Lyon")
    for i in range(3):  # later adds keep working
        mem.add("s1", [{"role": "user", "content": f"order #{5000 + i} please"}])
    assert mem.slots("s1").current.order_id == "5002"
    assert mem.errors("s1") == {}


def test_a_failing_or_odd_summarizer_is_recorded_and_the_summary_kept() -> None:
    """A summarizer that raises or returns something other than summary items is the session's
    summary_error; the turns are stored, the summary is unchanged, and add() never raises."""

    class Odd:
        def summarize(self, previous: Any, turns: Any) -> Any:
            return ["a plain string is not a summary item"]

    for summarizer, expected in ((Broken(), "RuntimeError: model unavailable"),
                                 (Odd(), "TypeError")):  # fmt: skip
        mem = memory(summarizer=summarizer, summarize_after=30, keep_recent=2)
        for i in range(10):
            mem.add("s1", pair(i))
        assert mem.count("s1") == 20
        assert mem.errors("s1")["summary_error"].startswith(expected)
        assert mem.summary("s1").covered == 0
        pack = mem.context("s1", budget=3000, user="where is order 1003?")
        assert pack.summary_error == mem.errors("s1")["summary_error"]
        assert "t6" in pack.sources()


def test_a_store_failing_after_the_append_is_recorded_not_raised() -> None:
    """If writing the slots or the summary fails once the turns are stored, add() returns the
    turns, records the failures, and a retry stores nothing twice."""

    class StateWritesFail(tl.MemoryTranscriptStore):
        def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
            raise tl.StoreError("disk full")

        def update_state(self, tenant: str, session: str, name: str, change: Any) -> Any:
            raise tl.StoreError("disk full")

    mem = memory(store=StateWritesFail(), slots=Ticket, extractors=[CITY], summarize_after=3,
                 keep_recent=1)  # fmt: skip
    batch = [{"role": "user", "content": "Please ship to Paris."},
             {"role": "assistant", "content": "Noted: it goes to Paris."}]  # fmt: skip
    turns = mem.add("s1", batch)
    assert len(turns) == 2
    errors = mem.errors("s1")
    assert "StoreError: disk full" in errors["slot_error"]
    assert "StoreError: disk full" in errors["summary_error"]
    assert mem.add("s1", batch) == turns
    assert mem.count("s1") == 2


def test_a_hung_summarizer_never_blocks_add_beyond_the_timeout() -> None:
    """A summarizer that does not answer is abandoned after call_timeout_s: add() returns, the
    timeout is the summary_error, later adds do not wait on it again, and once it answers
    summaries resume."""
    hung = Hung()
    mem = memory(summarizer=hung, summarize_after=20, keep_recent=2, call_timeout_s=0.2)
    try:
        start = time.perf_counter()
        mem.add("s1", history(5))
        first = time.perf_counter() - start
        assert 0.15 < first < 2.0
        assert "TimeoutError" in mem.errors("s1")["summary_error"]
        start = time.perf_counter()
        for i in range(5, 25):
            mem.add("s1", pair(i))
        assert time.perf_counter() - start < 1.0  # the hung call is not waited on again
        assert hung.calls == 1
        assert mem.count("s1") == 50
    finally:
        hung.release.set()
    deadline = time.monotonic() + 5
    while mem.summary("s1").covered == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        mem.update_summary("s1", force=True)
    assert mem.summary("s1").covered == 48
    assert "summary_error" not in mem.errors("s1")


def test_a_hung_extractor_never_blocks_add_beyond_the_timeout() -> None:
    """Slot extraction is cut off at call_timeout_s too: the turns are stored, the slots are
    unchanged, and the timeout is the slot_error."""
    hung = Hung()
    mem = memory(slots=Ticket, extractors=[hung], call_timeout_s=0.2)
    try:
        start = time.perf_counter()
        turns = mem.add("s1", [{"role": "user", "content": "Ship to Paris."}])
        assert time.perf_counter() - start < 2.0
        assert len(turns) == 1
        assert "TimeoutError" in mem.errors("s1")["slot_error"]
        assert mem.slots("s1").current == Ticket()
    finally:
        hung.release.set()


def test_collaborators_run_in_the_callers_context() -> None:
    """The summarizer and extractors run in worker threads (for the deadline) but see the
    caller's context variables, as tracing needs."""
    request = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    class Traced:
        def summarize(self, previous: Any, turns: Any) -> Any:
            seen.append(request.get())
            return list(previous.items)

        def extract(self, turn: Any) -> Any:
            seen.append(request.get())
            return {}

    mem = memory(summarizer=Traced(), slots=Ticket, extractors=[Traced()], summarize_after=5,
                 keep_recent=1)  # fmt: skip
    request.set("req-42")
    mem.add("s1", pair(0))
    assert seen == ["req-42", "req-42", "req-42"]  # two extractions, one summary
    assert mem.errors("s1") == {}


# --- context() degrades -----------------------------------------------------------------------


def test_context_serves_recent_turns_summary_and_slots_when_retrieval_fails() -> None:
    """With the embedder down, context() still fits the budget with recent turns, summary and
    slots, lists "retrieved" in degraded and carries the index_error; retrieval returns when
    the embedder does."""
    embedder = FlakyEmbedder(64)
    mem = memory(embedder=embedder, slots=Ticket, extractors=[CITY], summarize_after=200,
                 keep_recent=4)  # fmt: skip
    mem.add("s1", [{"role": "user", "content": "Please ship to Paris."}])
    mem.add("s1", history(40))
    embedder.down = True
    pack = mem.context("s1", budget=400, user="Question 3 about shipping: order 1003?")
    assert pack.tokens <= 400
    assert pack.degraded == ("retrieved",)
    assert pack.index_error is not None
    assert "embedding service unavailable" in pack.index_error
    sections = pack.section_tokens()
    assert {"state", "summary", "recent", "user"} <= set(sections)
    assert "retrieved" not in sections
    assert "city: Paris" in pack.messages[0]["content"]
    assert mem.errors("s1")["index_error"] == pack.index_error
    embedder.down = False
    pack = mem.context("s1", budget=400, user="Question 3 about shipping: order 1003?")
    assert pack.degraded == ()
    assert pack.index_error is None
    assert "retrieved" in pack.section_tokens()


def test_context_leaves_out_slot_state_it_cannot_read() -> None:
    """Slot state the slot model refuses (the model changed) is left out and reported instead
    of failing the context."""
    mem = memory(slots=Ticket)
    mem.add("s1", history(3))
    mem.store.put_state("default", "s1", "slots", {"values": {"order_id": "not a number"}})
    pack = mem.context("s1", budget=300, user="hello")
    assert pack.degraded == ("state",)
    assert pack.slot_error is not None
    assert "InvalidInputError" in pack.slot_error
    assert pack.tokens <= 300
    assert "recent" in pack.section_tokens()


# --- per-session state is bounded --------------------------------------------------------------


def test_per_session_state_is_capped_and_rebuilt_from_the_store() -> None:
    """At most max_sessions sessions keep their state (retrieval index included); an evicted
    session rebuilds it on its next use from the store (its turn vectors included: only the
    question is embedded), with the same context."""
    embedder = CountingEmbedder()
    mem = memory(embedder=embedder, max_sessions=2, keep_recent=2)
    for name in ("a", "b", "c"):
        mem.add(name, history(20))
    question = "Question 2 about shipping: where is order 1002?"
    before = mem.context("a", budget=250, user=question)
    embedded = embedder.texts
    mem.context("a", budget=250, user=question)
    assert embedder.texts == embedded + 1  # held: only the question is embedded
    mem.context("b", budget=250, user=question)
    mem.context("c", budget=250, user=question)
    assert len(mem._states.keys()) == 2
    embedded = embedder.texts
    again = mem.context("a", budget=250, user=question)
    assert embedder.texts == embedded + 1  # evicted: rebuilt from the stored vectors
    assert again.messages == before.messages


def test_release_drops_a_session_and_its_segments() -> None:
    """release() forgets the session's state (its segments' too) and nothing stored changes."""
    mem = memory(summarizer=Broken(), summarize_after=10)
    mem.add("s1", history(5))
    segment = mem.new_segment("s1")
    mem.add(segment, history(5))
    mem.add("s2", history(5))
    assert "summary_error" in mem.errors("s1")
    assert "summary_error" in mem.errors(segment)
    mem.release("s1")
    assert mem.errors("s1") == {}
    assert mem.errors(segment) == {}
    assert mem.errors("s2")
    assert mem._states.keys() == [("default", "s2")]
    assert (mem.count("s1"), mem.count(segment)) == (10, 10)


def test_a_session_cap_below_one_is_a_configuration_error() -> None:
    """max_sessions < 1 and a non-positive call_timeout_s are refused."""
    with pytest.raises(tl.ConfigurationError):
        memory(max_sessions=0)
    with pytest.raises(tl.ConfigurationError):
        memory(call_timeout_s=0)


# --- shared stores and other writers -----------------------------------------------------------


def test_two_memories_on_one_sqlite_file_lose_and_duplicate_no_turn(tmp_path: Path) -> None:
    """Two ConversationMemory objects sharing one SQLite file, each written by two threads, on
    one session: every turn is stored exactly once, with indexes without gaps."""
    path = tmp_path / "memory.db"
    stores = [tl.SQLiteTranscriptStore(path), tl.SQLiteTranscriptStore(path)]
    memories = [memory(store=store) for store in stores]

    def work(worker: int) -> None:
        for i in range(25):
            batch = [{"role": "user", "content": f"worker {worker} says {i}"},
                     {"role": "assistant", "content": f"reply {worker}/{i}"}]  # fmt: skip
            memories[worker % 2].add("s1", batch)

    try:
        assert run_workers(work, 4) == []
        turns = stores[0].turns("default", "s1")
        assert [t.index for t in turns] == list(range(200))
        assert sorted(t.content for t in turns if t.role == "user") == sorted(
            f"worker {w} says {i}" for w in range(4) for i in range(25)
        )
        for first, second in zip(turns[::2], turns[1::2], strict=True):  # batches stay whole
            assert second.content == "reply " + first.content.replace(" says ", "/")[7:]
    finally:
        for store in stores:
            store.close()


class Racing(tl.MemoryTranscriptStore):
    """A store where another writer appends to the session just before each of our first
    ``losses`` appends (as another process would when it wins the race)."""

    def __init__(self, losses: int) -> None:
        super().__init__()
        self.losses = losses
        self.appends = 0

    def append(self, tenant: str, session: str, turns: Sequence[tl.Turn]) -> None:
        self.appends += 1
        if self.losses:
            self.losses -= 1
            n = self.count(tenant, session)
            super().append(tenant, session, [tl.Turn(f"other-{n}", n, "user", "other", 0.0)])
        super().append(tenant, session, turns)


def test_add_retries_for_as_long_as_other_writers_take_the_index() -> None:
    """Losing the race for the next index many times in a row is not an error: add() looks
    again and stores its batch once, after the other writer's turns."""
    store = Racing(losses=12)
    mem = memory(store=store)
    turns = mem.add("s1", pair(0))
    assert [t.index for t in turns] == [12, 13]
    assert mem.count("s1") == 14
    assert [t.content for t in mem.turns("s1")[-2:]] == [m["content"] for m in pair(0)]


def test_a_refused_batch_is_not_retried() -> None:
    """Only an index taken by another writer is retried: a batch the store refuses for itself
    (text that is not valid Unicode) raises at once, after a single append."""
    store = Racing(losses=0)
    mem = memory(store=store)
    with pytest.raises(tl.InvalidInputError, match="Unicode"):
        mem.add("s1", [{"role": "user", "content": "broken \ud800 text"}])
    assert store.appends == 1
    assert mem.count("s1") == 0


def test_a_full_disk_fails_the_add_cleanly_and_stores_nothing(tmp_path: Path) -> None:
    """When the SQLite file cannot grow, add() raises StoreFullError (a StoreError) naming the
    file, with SQLite's error as its cause; nothing of the batch is stored, and adds work again
    once there is room."""
    store = tl.SQLiteTranscriptStore(tmp_path / "memory.db")
    mem = memory(store=store, summarize_after=10**9)
    mem.add("s1", pair(0))
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    with pytest.raises(tl.StoreFullError, match=r"memory\.db") as raised:
        mem.add("s1", [{"role": "user", "content": "x" * 200_000}])
    assert isinstance(raised.value.__cause__, sqlite3.Error)
    assert mem.count("s1") == 2
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    mem.add("s1", [{"role": "user", "content": "x" * 200_000}])
    assert mem.count("s1") == 3
    store.close()


def test_the_store_reads_only_what_an_add_needs() -> None:
    """However long the session, an add() reads a bounded number of turns from the store: its
    last turns for the retry check and the range not summarized yet, never the transcript."""

    class Spy(tl.MemoryTranscriptStore):
        largest = 0

        def turns(
            self, tenant: str, session: str, start: int = 0, end: int | None = None
        ) -> list[tl.Turn]:
            found = super().turns(tenant, session, start, end)
            self.largest = max(self.largest, len(found))
            return found

        def find(self, tenant: str, session: str, ids: Collection[str]) -> list[tl.Turn]:
            found = super().find(tenant, session, ids)
            self.largest = max(self.largest, len(found))
            return found

    store = Spy()
    mem = memory(store=store, summarize_after=400, keep_recent=4)
    for start in range(0, 1500, 100):
        mem.add("s1", [m for i in range(start, start + 100) for m in pair(i)])
    store.largest = 0
    for i in range(1500, 1600):
        mem.add("s1", pair(i))
        mem.add("s1", [{**m, "id": f"given-{i}-{k}"} for k, m in enumerate(pair(i))])
    assert mem.count("s1") == 3400
    assert 0 < store.largest <= 60


def test_nan_vectors_are_neither_indexed_nor_stored_and_the_turns_are_embedded_again(
    tmp_path: Path,
) -> None:
    """An embedder that returns NaN once degrades that context (no retrieval) instead of storing
    NaN vectors that every later process would read back and search with."""

    class NaNOnce(HashingEmbedder):
        broken = True

        def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
            vectors = super().embed(texts)
            return np.full_like(vectors, np.nan) if self.broken else vectors

    embedder = NaNOnce(64)
    store = tl.SQLiteTranscriptStore(tmp_path / "memory.db")
    memory = tl.ConversationMemory(store, embedder=embedder)
    memory.add("s", [{"role": ("user", "assistant")[i % 2], "content": f"Filler message {i}."}
                     for i in range(40)])  # fmt: skip
    memory.add("s", [{"role": "user", "content": "My locker code is 4711."}])
    pack = memory.context("s", budget=120, user="What is my locker code?")
    assert pack.degraded == ("retrieved",)
    assert "NaN" in (pack.index_error or "")
    embedder.broken = False
    restarted = tl.ConversationMemory(tl.SQLiteTranscriptStore(tmp_path / "memory.db"),
                                      embedder=embedder)  # fmt: skip
    pack = restarted.context("s", budget=120, user="What is my locker code?")
    assert pack.degraded == ()
    assert "My locker code is 4711." in "".join(str(m["content"]) for m in pack.messages)
