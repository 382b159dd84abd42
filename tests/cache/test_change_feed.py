"""Replicas sharing a Redis store keep their semantic indexes in step through its change feed:
another replica's semantic entry becomes a hit, its deletions stop hits, and a replica that fell
behind a trimmed feed rebuilds from a scan."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes
from tokenlean._cache.partitions import FeedChange
from tokenlean._cache.redis_store import RedisStore
from tokenlean.testing import HashingEmbedder

__all__ = ["prefixes"]  # the fixture, imported for pytest

BOUND_S = 1.0  # a change reaches the other replica within this (the feed is read every 10 ms)


def _request(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    )


def _cache(store: tl.CacheStore | str) -> tl.CompletionCache:
    return tl.CompletionCache(
        store=store,
        policy=tl.CachePolicy.semantic(threshold=0.8, verifier=None, compare=tl.last_user_turn),
        embedder=HashingEmbedder(64),
        background_judging=False,
    )


def _within(bound_s: float, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` holds; fails past ``bound_s``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound_s, f"not within {bound_s} s"
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def pair(prefixes: Prefixes) -> Iterator[tuple[tl.CompletionCache, tl.CompletionCache]]:
    prefix = prefixes.new()
    a = _cache(f"{URL}?prefix={prefix}")
    b = _cache(RedisStore(URL, prefix=prefix))
    yield a, b
    a.close()
    b.close()


def test_a_semantic_entry_stored_by_one_replica_becomes_a_hit_on_the_other(
    pair: tuple[tl.CompletionCache, tl.CompletionCache],
) -> None:
    """A paraphrase looked up on replica B hits the entry replica A stored after B had loaded
    its indexes, within a bounded time."""
    a, b = pair
    a.store(_request("where is my parcel today"), "In Lyon.")
    assert b.lookup(_request("today where is my parcel")).hit  # B loads its indexes
    a.store(_request("how do I reset my password"), "Use the link.")
    paraphrase = _request("my password how do I reset")
    _within(BOUND_S, lambda: b.lookup(paraphrase).hit)
    assert b.lookup(paraphrase).layer == "semantic"
    assert b.lookup(paraphrase).value == "Use the link."


def test_a_deletion_or_invalidation_on_one_replica_stops_hits_on_the_other(
    pair: tuple[tl.CompletionCache, tl.CompletionCache],
) -> None:
    """Feedback that removes an entry, and an invalidation by tag, on replica A leave replica
    B's index: B's paraphrase lookups stop hitting."""
    a, b = pair
    a.store(_request("refund policy for shoes"), "30 days.")
    a.store(_request("opening hours on sunday"), "Closed.", tags=["hours"])
    refund, hours = _request("shoes refund policy for"), _request("on sunday opening hours")
    _within(BOUND_S, lambda: b.lookup(refund).hit and b.lookup(hours).hit)
    hit = a.lookup(refund)
    assert hit.layer == "semantic"
    assert a.feedback(hit, correct=False)  # removes the entry
    assert a.invalidate(tag="hours") == 1
    _within(BOUND_S, lambda: not b.lookup(refund).hit and not b.lookup(hours).hit)
    assert b.stats().store_errors == 0


def test_the_feed_records_puts_and_every_kind_of_removal_in_order(prefixes: Prefixes) -> None:
    """changes_since returns semantic entries' puts, the eviction a put causes (after it) and
    deletions in order, ignores exact entries, and starts at the feed's end given no position."""
    store = RedisStore(URL, prefix=prefixes.new(), max_entries=2)
    try:
        start = store.changes_since(None)
        assert start is not None
        assert start[0] == []
        semantic = {"layer": "semantic", "vector": b"\x00<" * 4}
        store.put(tl.StoredEntry("ns", "a", b"v", 0.0, **semantic))  # type: ignore[arg-type]
        store.put(tl.StoredEntry("ns", "exact", b"v", 0.0))
        store.put(tl.StoredEntry("ns", "b", b"v", 0.0, **semantic))  # type: ignore[arg-type]
        store.delete(tl.Selector(namespace="ns", key="b"))
        result = store.changes_since(start[1])
        assert result is not None
        changes, position = result
        assert [(c.op, c.key) for c in changes] == [
            ("put", "a"), ("put", "b"), ("evicted", "a"), ("deleted", "b"),
        ]  # fmt: skip
        assert changes[0] == FeedChange("put", "ns", "a", None, None)  # gone by the read
        assert store.changes_since(position) == ([], position)
    finally:
        store.close()


def test_a_replica_behind_a_trimmed_feed_rebuilds_from_a_scan(prefixes: Prefixes) -> None:
    """When the feed was trimmed past replica B's position, B rebuilds its indexes from a scan
    and then hits the entries it never read in the feed."""
    prefix = prefixes.new()
    a = _cache(RedisStore(URL, prefix=prefix, feed_length=10))
    b = _cache(RedisStore(URL, prefix=prefix, feed_length=10))
    try:
        a.store(_request("first question here"), "one")
        assert b.lookup(_request("here first question")).hit
        for i in range(400):  # stream nodes hold 100 records: MAXLEN ~ 10 trims whole nodes
            a.store(_request(f"filler number {i} words"), i)
        a.store(_request("late question about invoices"), "late")
        _within(BOUND_S, lambda: b.lookup(_request("invoices late question about")).hit)
        assert b._partitions.rebuilds == 1
        assert a._partitions.rebuilds == 0  # A indexed its own writes as it made them
    finally:
        a.close()
        b.close()


def test_stores_without_a_feed_are_read_once(tmp_path: object) -> None:
    """Memory and SQLite stores offer no feed: the cache's partitions never read one."""
    for store in (tl.MemoryStore(), f"sqlite:///{tmp_path}/cache.db"):
        cache = _cache(store)
        assert cache._partitions.feed is None
        cache.store(_request("a question here"), "x")
        assert cache.lookup(_request("here a question")).hit
        cache.close()


def test_a_replica_that_loads_a_large_partition_builds_its_hnsw_index_without_a_write(
    tmp_path: Path,
) -> None:
    """Loaded from the store, a partition past the threshold starts exact and is switched to
    HNSW in the background, without waiting for this replica's first write."""
    from tokenlean import CachePolicy, CacheRequest, CompletionCache, SQLiteStore, last_user_turn
    from tokenlean.testing import HashingEmbedder

    policy = CachePolicy.semantic(threshold=0.9, compare=last_user_turn)
    path = tmp_path / "cache.db"
    writer = CompletionCache(SQLiteStore(path), policy=policy, embedder=HashingEmbedder(32),
                             hnsw_threshold=50)  # fmt: skip
    for i in range(80):
        request = CacheRequest(model="m", messages=({"role": "user", "content": f"question {i}"},))
        writer.store(request, f"answer {i}")
    writer.close()
    joining = CompletionCache(SQLiteStore(path), policy=policy, embedder=HashingEmbedder(32),
                              hnsw_threshold=50)  # fmt: skip
    probe = CacheRequest(model="m", messages=({"role": "user", "content": "question 7?"},))
    joining.lookup(probe)
    deadline = time.monotonic() + 10
    while joining.stats().indexes.get("hnsw") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert joining.stats().indexes == {"hnsw": 1}
    joining.close()
