"""The Redis transcript store meets the transcript-store contract on a real server, is shared by
two handles as by two replicas, and never loses a concurrent state update."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, own_server, prefixes
from tokenlean.testing import TranscriptStoreContract
from tokenlean.testing._workers import run_workers

__all__ = ["prefixes"]  # the fixture, imported for pytest


class TestRedisTranscriptStore(TranscriptStoreContract):
    persistent = True

    @pytest.fixture(autouse=True)
    def _server(self, prefixes: Prefixes) -> Iterator[None]:
        self.prefixes = prefixes
        self.opened: list[tl.RedisTranscriptStore] = []
        yield
        for store in self.opened:
            store.close()

    def _open(self, prefix: str) -> tl.RedisTranscriptStore:
        store = tl.RedisTranscriptStore(URL, prefix=prefix)
        self.opened.append(store)
        return store

    def make_store(self) -> tl.TranscriptStore:
        return self._open(self.prefixes.new())

    def reopen(self, store: tl.TranscriptStore) -> tl.TranscriptStore:
        assert isinstance(store, tl.RedisTranscriptStore)
        store.close()
        return self._open(store.prefix)


def _turn(index: int, turn_id: str) -> tl.Turn:
    return tl.Turn(turn_id, index, "user", turn_id, 1.0)


def test_two_handles_as_two_replicas_keep_every_turn_exactly_once(prefixes: Prefixes) -> None:
    """Two stores on one prefix appending to one session, retrying when the other took the
    index: every turn once, indexes without gaps, each worker's turns in its order."""
    prefix = prefixes.new()
    stores = [tl.RedisTranscriptStore(URL, prefix=prefix) for _ in range(2)]

    def work(worker: int) -> None:
        store = stores[worker % 2]
        for i in range(30):
            while True:
                try:
                    start = store.count("acme", "s1")
                    store.append("acme", "s1", [_turn(start, f"{worker}-{i}")])
                    break
                except tl.InvalidInputError:
                    continue

    assert run_workers(work, 4) == []
    turns = stores[0].turns("acme", "s1")
    assert [t.index for t in turns] == list(range(120))
    assert sorted(t.id for t in turns) == sorted(f"{w}-{i}" for w in range(4) for i in range(30))
    for store in stores:
        store.close()


def test_concurrent_state_updates_are_never_lost(prefixes: Prefixes) -> None:
    """Eight threads on two handles each add 25 keys to one slots value through update_state:
    all 200 are there (compare-and-set retries the losers)."""
    prefix = prefixes.new()
    stores = [tl.RedisTranscriptStore(URL, prefix=prefix) for _ in range(2)]

    def work(worker: int) -> None:
        for i in range(25):

            def add(slots: Any, key: str = f"{worker}-{i}") -> Any:
                return {**(slots or {}), key: worker}

            stores[worker % 2].update_state("acme", "s1", "slots", add, attempts=1_000)

    assert run_workers(work, 8) == []
    assert len(stores[0].get_state("acme", "s1", "slots")) == 200
    for store in stores:
        store.close()


def test_compare_and_set_refuses_a_stale_version(prefixes: Prefixes) -> None:
    """A write at a version another write has moved past stores nothing and returns None."""
    store = tl.RedisTranscriptStore(URL, prefix=prefixes.new())
    assert store.get_state_version("acme", "s1", "slots") == (None, 0)
    assert store.compare_and_set_state("acme", "s1", "slots", {"a": 1}, 0) == 1
    store.put_state("acme", "s1", "slots", {"b": 2})  # version 2
    assert store.compare_and_set_state("acme", "s1", "slots", {"c": 3}, 1) is None
    assert store.get_state_version("acme", "s1", "slots") == ({"b": 2}, 2)
    store.close()


def test_a_lost_server_is_a_typed_error_naming_it() -> None:
    """When the server goes away, reads and appends raise StoreBackendError naming it."""
    with own_server() as url:
        store = tl.RedisTranscriptStore(url, timeout_s=0.5)
        store.append("acme", "s1", [_turn(0, "a")])
    for operation in (
        lambda: store.append("acme", "s1", [_turn(1, "b")]),
        lambda: store.turns("acme", "s1"),
        lambda: store.put_state("acme", "s1", "slots", {}),
    ):
        with pytest.raises(tl.StoreBackendError, match=url):
            operation()
