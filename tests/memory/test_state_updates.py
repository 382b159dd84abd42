"""update_state: a read-modify-write of session state that never loses a concurrent update."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenlean import MemoryTranscriptStore, NotSerializableError, SQLiteTranscriptStore
from tokenlean.testing._workers import run_workers


def _increments(stores: list[Any], threads: int = 8, each: int = 40) -> None:
    def work(worker: int) -> None:
        for _ in range(each):
            stores[worker % len(stores)].update_state(
                "t", "s", "counter", lambda value: (value or 0) + 1
            )

    assert run_workers(work, threads) == []


def test_sqlite_handles_on_one_file_lose_no_update(tmp_path: Path) -> None:
    stores = [SQLiteTranscriptStore(tmp_path / "t.db") for _ in range(3)]
    _increments(stores)
    assert stores[0].get_state("t", "s", "counter") == 8 * 40
    for store in stores:
        store.close()


def test_the_memory_store_loses_no_update() -> None:
    store = MemoryTranscriptStore()
    _increments([store])
    assert store.get_state("t", "s", "counter") == 8 * 40


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_an_unserializable_result_writes_nothing(kind: str, tmp_path: Path) -> None:
    store: Any = (
        MemoryTranscriptStore() if kind == "memory" else SQLiteTranscriptStore(tmp_path / "t.db")
    )
    store.put_state("t", "s", "slots", {"city": "Lyon"})
    with pytest.raises(NotSerializableError):
        store.update_state("t", "s", "slots", lambda value: {"city": {1, 2}})
    assert store.get_state("t", "s", "slots") == {"city": "Lyon"}


def test_set_slots_from_two_memories_on_one_file_loses_no_update(tmp_path: Path) -> None:
    """Eight threads on two ConversationMemory objects sharing one SQLite file each set their own
    slot again and again: every slot ends with its last value (no write overwrites another's)."""
    from pydantic import BaseModel

    from tokenlean import ConversationMemory
    from tokenlean.testing import HashingEmbedder

    class Slots(BaseModel):
        s0: int | None = None
        s1: int | None = None
        s2: int | None = None
        s3: int | None = None
        s4: int | None = None
        s5: int | None = None
        s6: int | None = None
        s7: int | None = None

    memories = [
        ConversationMemory(
            SQLiteTranscriptStore(tmp_path / "m.db"), slots=Slots, embedder=HashingEmbedder(16)
        )
        for _ in range(2)
    ]

    def work(i: int) -> None:
        for value in range(25):
            memories[i % 2].set_slots("s", {f"s{i}": value})

    assert run_workers(work, 8) == []
    final = memories[0].slots("s").current.model_dump()
    assert final == {f"s{i}": 24 for i in range(8)}


class _OtherReplicaFinishesFirst:
    """A summarizer during whose call another replica stores a summary covering more turns."""

    def __init__(self, store: Any, covered: int) -> None:
        self.store, self.covered = store, covered

    def summarize(self, previous: Any, turns: Any) -> list[Any]:
        from tokenlean import RollingSummary, SummaryItem

        theirs = RollingSummary((SummaryItem("theirs", ("t0",), 1.0),), self.covered)
        self.store.put_state("default", "s1", "summary", theirs.to_json())
        return [SummaryItem("ours", ("t1",), 1.0)]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_summary_never_moves_back_past_another_replicas(backend: str, tmp_path: Path) -> None:
    """Two replicas summarizing one session: the summary covering more turns stays, and the
    replica that lost returns it (its own is dropped, not written over the other's)."""
    from tokenlean import ConversationMemory
    from tokenlean.testing import HashingEmbedder

    store: Any = (
        MemoryTranscriptStore() if backend == "memory" else SQLiteTranscriptStore(tmp_path / "m.db")
    )
    memory = ConversationMemory(
        store, embedder=HashingEmbedder(32), summarizer=_OtherReplicaFinishesFirst(store, 30),
        keep_recent=2,
    )  # fmt: skip
    memory.add("s1", [{"role": "user", "content": f"message {i}"} for i in range(20)])
    result = memory.update_summary("s1", force=True)
    assert result.covered == 30
    assert [item.text for item in result.items] == ["theirs"]
    assert memory.summary("s1").covered == 30

    # When ours covers more, ours is stored.
    memory.summarizer = _OtherReplicaFinishesFirst(store, 5)
    memory.add("s1", [{"role": "user", "content": f"message {i}"} for i in range(20, 40)])
    result = memory.update_summary("s1", force=True)
    assert result.covered == 38
    assert [item.text for item in result.items] == ["ours"]
