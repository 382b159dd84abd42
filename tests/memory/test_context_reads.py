"""Context assembly reads only what the pack can hold: the cost does not grow with the session."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import tokenlean as tl
from tokenlean._memory.transcript import Turn
from tokenlean._memory.transcript_memory import MemoryTranscriptStore
from tokenlean.testing import HashingEmbedder


class CountingStore(MemoryTranscriptStore):
    """A memory store that counts the turns it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        out = super().turns(tenant, session, start, end)
        self.read += len(out)
        return out

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        out = super().find(tenant, session, ids)
        self.read += len(out)
        return out


def filled(store: CountingStore, n: int) -> tl.ConversationMemory:
    memory = tl.ConversationMemory(store, embedder=HashingEmbedder(64))
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Answer briefly."}]
    messages.extend(
        {"role": ("user", "assistant")[i % 2], "content": f"Message {i} about order {1000 + i}."}
        for i in range(n)
    )
    memory.add("s", messages)
    memory.context("s", budget=600, user="warm up")  # the first context indexes every turn
    memory.wait()  # and the summary, updated in the background, is done reading
    return memory


def test_a_context_reads_a_bounded_number_of_turns_at_any_length() -> None:
    """Once the session is indexed, a context reads about as many turns at 6,000 turns as at
    2,000 (what the budget can hold, and the retrieved turns), and still finds the system turn."""
    reads = []
    for n in (2000, 6000):
        store = CountingStore()
        memory = filled(store, n)
        store.read = 0
        pack = memory.context("s", budget=600, user="Which message was about order 1007?")
        reads.append(store.read)
        assert pack.tokens <= 600
        assert (pack.items[0].section, pack.items[0].text) == ("system", "Answer briefly.")
        assert "t8" in pack.sources()  # message 7 is turn 8, after the system turn
    # One block of 64 from the end, the 80 ranked turns by id, and five turns around each of
    # the best hits (their neighbours), at most ten hits apart: not a block of 64 per neighbour.
    assert max(reads) <= 64 + 80 + 10 * 5
    assert reads[1] <= reads[0] + 10


def test_new_turns_are_read_once_and_new_system_turns_are_found() -> None:
    """Turns added after a context are read by the next one, system turns among them too."""
    store = CountingStore()
    memory = filled(store, 300)
    memory.add("s", [{"role": "system", "content": "Use metric units."}])
    memory.add("s", [{"role": "user", "content": "How far is it?"}])
    pack = memory.context("s", budget=600)
    assert [i.text for i in pack.items if i.section == "system"] == [
        "Answer briefly.\n\nUse metric units."
    ]
    assert pack.messages[-1] == {"role": "user", "content": "How far is it?"}


def test_a_system_turn_at_the_end_does_not_break_the_walk_back_into_small_reads() -> None:
    """A mid-session system update just before the end: the recent window is still read back
    in blocks, as many store calls and turns as without it."""

    class CallCounting(CountingStore):
        calls = 0

        def turns(
            self, tenant: str, session: str, start: int = 0, end: int | None = None
        ) -> list[Turn]:
            self.calls += 1
            return super().turns(tenant, session, start, end)

    reads = []
    for with_system in (False, True):
        store = CallCounting()
        memory = tl.ConversationMemory(store, embedder=HashingEmbedder(64))
        memory.add("s", [{"role": ("user", "assistant")[i % 2], "content": f"Message {i}."}
                         for i in range(2000)])  # fmt: skip
        if with_system:
            memory.add("s", [{"role": "system", "content": "Use metric units."}])
        memory.context("s", budget=4000, user="warm up")
        memory.wait()
        store.read = store.calls = 0
        memory.context("s", budget=4000, user="Which message was about order 1007?")
        reads.append((store.calls, store.read))
    assert reads[1] == reads[0]
