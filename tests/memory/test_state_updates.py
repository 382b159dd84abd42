"""update_state: a read-modify-write of session state that never loses a concurrent update."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tokenlean import MemoryTranscriptStore, NotSerializableError, SQLiteTranscriptStore


def _increments(stores: list[Any], threads: int = 8, each: int = 40) -> None:
    def work(store: Any) -> None:
        for _ in range(each):
            store.update_state("t", "s", "counter", lambda value: (value or 0) + 1)

    runners = [
        threading.Thread(target=work, args=(stores[i % len(stores)],)) for i in range(threads)
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()


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

    runners = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    final = memories[0].slots("s").current.model_dump()
    assert final == {f"s{i}": 24 for i in range(8)}
