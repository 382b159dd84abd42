"""Both transcript stores meet the shared contract; SQLite also survives restarts and is shared
safely by two handles on one file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tokenlean as tl
from tokenlean.testing import TranscriptStoreContract
from tokenlean.testing._workers import run_workers


class TestMemoryTranscriptStore(TranscriptStoreContract):
    def make_store(self) -> tl.TranscriptStore:
        return tl.MemoryTranscriptStore()


class TestSQLiteTranscriptStore(TranscriptStoreContract):
    persistent = True

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> Iterator[None]:
        self.folder = tmp_path
        self.opened: list[tl.SQLiteTranscriptStore] = []
        yield
        for store in self.opened:
            store.close()

    def _open(self, path: Path) -> tl.SQLiteTranscriptStore:
        store = tl.SQLiteTranscriptStore(path)
        self.opened.append(store)
        return store

    def make_store(self) -> tl.TranscriptStore:
        return self._open(self.folder / f"memory-{len(self.opened)}.db")

    def reopen(self, store: tl.TranscriptStore) -> tl.TranscriptStore:
        assert isinstance(store, tl.SQLiteTranscriptStore)
        store.close()
        return self._open(store.path)


def test_two_handles_on_one_file_keep_every_turn_exactly_once(tmp_path: Path) -> None:
    """Two stores on the same file (as two processes would have) appending to one session,
    retrying when the other took the index: every turn once, indexes without gaps."""
    path = tmp_path / "shared.db"
    stores = [tl.SQLiteTranscriptStore(path), tl.SQLiteTranscriptStore(path)]

    def work(worker: int) -> None:
        store = stores[worker % 2]
        for i in range(20):
            for _attempt in range(10_000):
                start = len(store.turns("acme", "s1"))
                turn = tl.Turn(f"w{worker}-{i}", start, "user", f"{worker}/{i}", 0.0)
                try:
                    store.append("acme", "s1", [turn])
                    break
                except tl.InvalidInputError:
                    continue  # the other handle appended first
            else:
                raise AssertionError("never got to append")

    try:
        assert run_workers(work, 4) == []
        turns = stores[0].turns("acme", "s1")
        assert [t.index for t in turns] == list(range(80))
        expected = sorted(f"w{w}-{i}" for w in range(4) for i in range(20))
        assert sorted(t.id for t in turns) == expected
        assert stores[1].turns("acme", "s1") == turns
    finally:
        for store in stores:
            store.close()


def test_the_backends_are_no_longer_in_the_port_module() -> None:
    """The port module holds the protocol and Turn; the backends live in their own modules."""
    from tokenlean._memory import transcript, transcript_memory, transcript_sqlite

    assert tl.MemoryTranscriptStore is transcript_memory.MemoryTranscriptStore
    assert tl.SQLiteTranscriptStore is transcript_sqlite.SQLiteTranscriptStore
    assert not hasattr(transcript, "SQLiteTranscriptStore")
    assert set(transcript.__all__).isdisjoint({"MemoryTranscriptStore", "SQLiteTranscriptStore"})
