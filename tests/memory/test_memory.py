"""Context memory: transcripts kept whole, budgets never exceeded, provenance, slots, summaries."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

import tokenlean as tl
from tokenlean.testing import FakeClock, HashingEmbedder

COUNT = tl.get_token_counter()


class Slots(BaseModel):
    order_id: str | None = Field(default=None, pattern=r"^\d{4,}$")
    city: str | None = None


def memory(**options: Any) -> tl.ConversationMemory:
    options.setdefault("embedder", HashingEmbedder(64))
    options.setdefault("clock", FakeClock())
    return tl.ConversationMemory(**options)


def chat(n: int) -> list[dict[str, Any]]:
    topics = ["refunds", "shipping to Lyon", "the warranty", "passwords", "invoices"]
    messages = []
    for i in range(n):
        topic = topics[i % len(topics)]
        messages.append(
            {
                "role": "user",
                "content": f"Question {i} about {topic}: how does it work for order {1000 + i}?",
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": f"Answer {i}: {topic} works like this, for order {1000 + i}.",
            }
        )
    return messages  # fmt: skip


def test_the_raw_transcript_is_kept_whole_with_stable_ids() -> None:
    """Every turn is stored with an id, index and timestamp; nothing is rewritten."""
    mem = memory()
    mem.add("s1", chat(3))
    turns = mem.turns("s1")
    assert [t.id for t in turns] == [f"t{i}" for i in range(6)]
    assert [t.index for t in turns] == list(range(6))
    mem.context("s1", budget=120)
    assert mem.turns("s1") == turns


def test_the_budget_is_never_exceeded_and_every_item_has_provenance() -> None:
    """Across budgets, the rendered messages fit, and items name their source turns."""
    mem = memory(summarize_after=200)
    mem.add("s1", [{"role": "system", "content": "You are the support agent."}, *chat(40)])
    for budget in (80, 150, 300, 600, 1200):
        pack = mem.context("s1", budget=budget, user="what about the warranty for order 1012?")
        assert pack.tokens <= budget
        assert tl.count_message_tokens(pack.messages).total == pack.tokens
        assert pack.messages[0]["role"] == "system"
        assert pack.messages[-1]["content"] == "what about the warranty for order 1012?"
        for item in pack.items:
            if item.section in ("recent", "retrieved", "summary"):
                assert item.sources


def test_older_relevant_turns_are_retrieved() -> None:
    """A question about an old turn brings that turn back into a small context."""
    mem = memory()
    mem.add("s1", chat(40))
    pack = mem.context("s1", budget=300, user="Question 2 about the warranty, order 1002?")
    assert "t4" in pack.sources() or "t5" in pack.sources()


def test_a_budget_below_the_pinned_sections_is_a_clear_error() -> None:
    """If the system prompt and user turn alone do not fit, say so."""
    mem = memory()
    mem.add("s1", [{"role": "system", "content": "policy " * 200}])
    with pytest.raises(tl.ConfigurationError, match="pinned"):
        mem.context("s1", budget=50, user="hi")


def test_tool_calls_are_never_split_from_their_results() -> None:
    """The recent window keeps an assistant tool call together with its tool results."""
    mem = memory()
    mem.add("s1", chat(10))
    call = {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
    mem.add("s1", [
        {"role": "user", "content": "where is order 1234?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "In Lyon. " * 10},
        {"role": "assistant", "content": "It is in Lyon."},
    ])  # fmt: skip
    for budget in range(60, 400, 20):
        pack = mem.context("s1", budget=budget, user="thanks, and when will it arrive?")
        roles = [m["role"] for m in pack.messages]
        for i, role in enumerate(roles):
            if role == "tool":
                assert roles[i - 1] in ("assistant", "tool")
                assert any("tool_calls" in m for m in pack.messages[:i])


def test_malformed_messages_are_rejected_and_nothing_is_stored() -> None:
    """A bad message in a batch raises MalformedRequestError; the batch is not stored."""
    mem = memory()
    for bad in ([{"role": "robot", "content": "x"}], [{"role": "user", "content": 5}],
                [{"role": "tool", "content": "x"}], ["not a message"]):  # fmt: skip
        with pytest.raises(tl.MalformedRequestError):
            mem.add("s1", [{"role": "user", "content": "ok"}, *bad])
    assert mem.turns("s1") == []


def test_summaries_are_incremental_and_keep_provenance() -> None:
    """Older turns are summarized once; items name the turns they came from."""
    mem = memory(summarize_after=100, keep_recent=4)
    mem.add("s1", chat(20))
    summary = mem.summary("s1")
    assert summary.covered == 36
    assert summary.items
    turn_ids = {t.id for t in mem.turns("s1")}
    assert all(set(item.sources) <= turn_ids for item in summary.items)
    first = summary.items[0]
    mem.add("s1", chat(5))
    assert mem.summary("s1").items[0] == first  # earlier items are never re-summarized


def test_a_failing_summarizer_loses_nothing_and_is_reported() -> None:
    """If summarization fails, the raw turns stay in play and the error is in the pack."""

    class Broken:
        def summarize(self, previous: Any, turns: Any) -> Any:
            raise RuntimeError("model unavailable")

    mem = memory(summarizer=Broken(), summarize_after=50, keep_recent=2)
    mem.add("s1", chat(20))
    pack = mem.context("s1", budget=2000, user="question about refunds")
    assert pack.summary_error == "RuntimeError: model unavailable"
    assert len(mem.turns("s1")) == 40
    assert mem.summary("s1").covered == 0


def test_summaries_can_run_in_the_background() -> None:
    """With background=True the summary is updated off the request path."""
    mem = memory(summarize_after=100, keep_recent=4, background=True)
    mem.add("s1", chat(20))
    mem.wait()
    assert mem.summary("s1").covered == 36
    mem.close()


def test_slots_are_extracted_superseded_with_history_and_pinned() -> None:
    """Later values win, every change is recorded, and the state is always in the context."""
    extractors = [tl.RegexExtractor("order_id", r"order #?(\d{4,})"),
                  tl.RegexExtractor("city", r"ship(?:ped)? to ([A-Z][a-z]+)")]  # fmt: skip
    mem = memory(slots=Slots, extractors=extractors)
    mem.add("s1", [{"role": "user", "content": "Please ship to Paris, order #1234."}])
    mem.add("s1", chat(30))
    mem.add("s1", [{"role": "user", "content": "Actually ship to Lyon."}])
    slots = mem.slots("s1")
    assert (slots.current.order_id, slots.current.city) == ("1029", "Lyon")
    assert [c.new for c in slots.history if c.slot == "city"] == ["Paris", "Lyon"]
    pack = mem.context("s1", budget=120, user="when does it arrive?")
    assert "city: Lyon" in pack.messages[0]["content"]
    assert any(item.section == "state" for item in pack.items)


def test_invalid_slot_values_are_rejected_and_nothing_changes() -> None:
    """A value the slot model refuses raises InvalidInputError; the old value stays."""
    mem = memory(slots=Slots)
    mem.set_slots("s1", {"order_id": "12345"})
    with pytest.raises(tl.InvalidInputError):
        mem.set_slots("s1", {"order_id": "abc"})
    with pytest.raises(tl.InvalidInputError):
        mem.set_slots("s1", {"colour": "red"})
    assert mem.slots("s1").current.order_id == "12345"


def test_sessions_and_tenants_are_isolated_under_threads() -> None:
    """Concurrent sessions never see each other's turns."""
    mem = memory()
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(20):
            mem.add(
                f"s{n}",
                [{"role": "user", "content": f"session {n} message {i}"}],
                tenant=f"t{n % 2}",
            )
        turns = mem.turns(f"s{n}", tenant=f"t{n % 2}")
        if [t.content for t in turns] != [f"session {n} message {i}" for i in range(20)]:
            errors.append(f"s{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert mem.turns("s0", tenant="t1") == []


def test_the_sqlite_store_keeps_transcripts_summaries_and_slots_across_restarts(
    tmp_path: Path,
) -> None:
    """A new memory on the same file sees the same turns, summary and slots."""
    path = tmp_path / "memory.db"
    first = memory(
        store=tl.SQLiteTranscriptStore(path), slots=Slots, summarize_after=100, keep_recent=4
    )
    first.add("s1", chat(15))
    first.set_slots("s1", {"city": "Lyon"})
    before = (first.turns("s1"), first.summary("s1"))
    second = memory(store=tl.SQLiteTranscriptStore(path), slots=Slots)
    assert (second.turns("s1"), second.summary("s1")) == before
    assert second.slots("s1").current.city == "Lyon"
    with pytest.raises(tl.InvalidInputError):
        second.store.append("default", "s1", [tl.Turn("t0", 30, "user", "dup", 0.0)])


def test_retrieved_turns_are_labelled_by_position_not_by_long_ids() -> None:
    """Message ids can be UUIDs: the prompt labels a retrieved turn by its position (a few
    tokens), and the pack item keeps the full id as its source."""
    import uuid

    memory = tl.ConversationMemory(embedder=HashingEmbedder(64), keep_recent=2)
    ids = [str(uuid.uuid4()) for _ in range(12)]
    memory.add(
        "s",
        [
            {"role": "user" if i % 2 == 0 else "assistant", "id": ids[i],
             "content": f"Turn {i}: the router wifi firmware {i}"}
            for i in range(12)
        ],
    )  # fmt: skip
    pack = memory.context("s", budget=200, system="You are support.", user="wifi firmware?")
    retrieved = [item for item in pack.items if item.section == "retrieved"]
    assert retrieved
    content = pack.messages[0]["content"]  # text parts: the system prompt, then what changes
    text = "".join(part["text"] for part in content) if isinstance(content, list) else content
    assert "[#" in text
    assert not any(i in text for i in ids)
    for item in retrieved:
        assert item.text.startswith("[#")
        assert item.sources[0] in ids
