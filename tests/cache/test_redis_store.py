"""The Redis store meets the cache-store contract on a real server, shares its bounds across
processes, expires natively, and turns a lost server into typed errors the caches survive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, own_server, prefixes
from tokenlean._cache.redis_store import RedisStore
from tokenlean.testing import CacheStoreContract, FakeClock

__all__ = ["prefixes"]  # the fixture, imported for pytest

DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


class TestRedisStore(CacheStoreContract):
    persistent = True

    @pytest.fixture(autouse=True)
    def _server(self, prefixes: Prefixes) -> Iterator[None]:
        self.prefixes = prefixes
        self.opened: list[RedisStore] = []
        yield
        for store in self.opened:
            store.close()

    def _open(self, prefix: str, **limits: Any) -> RedisStore:
        store = RedisStore(URL, prefix=prefix, **limits)
        self.opened.append(store)
        return store

    def make_store(self, **limits: Any) -> tl.CacheStore:
        return self._open(self.prefixes.new(), **limits)

    def reopen(self, store: tl.CacheStore) -> tl.CacheStore:
        assert isinstance(store, RedisStore)
        store.close()
        return self._open(store.prefix)


def test_two_stores_on_one_prefix_share_entries_secret_and_bounds(prefixes: Prefixes) -> None:
    """Two replicas' stores see each other's writes, derive keys alike, and hold one bound
    together: the deployment never exceeds max_entries."""
    prefix = prefixes.new()
    a = RedisStore(URL, prefix=prefix, max_entries=10)
    b = RedisStore(URL, prefix=prefix, max_entries=10)
    try:
        assert a.secret == b.secret
        for i in range(15):
            (a if i % 2 else b).put(tl.StoredEntry("ns", f"k{i}", b"v", 0.0))
        assert a.usage() == b.usage() == (10, 10)
        assert b.get("ns", "k14") is not None
        assert a.get("ns", "k0") is None
    finally:
        a.close()
        b.close()


def test_a_lookup_in_one_replica_protects_the_entry_from_eviction_by_another(
    prefixes: Prefixes,
) -> None:
    """Recency recorded by one store's lookups reaches the server with its next write, and
    eviction then spares that entry."""
    prefix = prefixes.new()
    a = RedisStore(URL, prefix=prefix, max_entries=3)
    b = RedisStore(URL, prefix=prefix, max_entries=3)
    try:
        a.put(tl.StoredEntry("ns", "old", b"v", 0.0))
        a.put(tl.StoredEntry("ns", "newer", b"v", 0.0))
        assert a.get("ns", "old") is not None  # recorded in a, not yet on the server
        a.put(tl.StoredEntry("ns", "latest", b"v", 0.0))  # a's write carries the recency
        assert b.put(tl.StoredEntry("ns", "third", b"v", 0.0)) == [("ns", "newer")]
    finally:
        a.close()
        b.close()


def test_entries_with_a_future_expiry_get_a_native_ttl(prefixes: Prefixes) -> None:
    """An entry expiring ahead of the server's clock is dropped by Redis itself; the next write
    reports it removed and usage no longer counts it."""
    store = RedisStore(URL, prefix=prefixes.new())
    try:
        store.put(tl.StoredEntry("ns", "brief", b"v" * 7, 0.0, expires_at=time.time() + 0.15))
        store.put(tl.StoredEntry("ns", "forever", b"v", 0.0))
        ttl = store._redis.client.pttl(store._key("e:" + "2:nsbrief"))
        assert 0 < ttl <= 150
        time.sleep(0.3)
        assert store.get("ns", "brief") is None
        assert store.put(tl.StoredEntry("ns", "next", b"v", 0.0)) == [("ns", "brief")]
        assert store.usage() == (2, 2)
    finally:
        store.close()


def test_a_prefix_isolates_applications_on_one_server(prefixes: Prefixes) -> None:
    """Stores with different prefixes share nothing: entries, secrets, usage."""
    a = RedisStore(URL, prefix=prefixes.new())
    b = RedisStore(URL, prefix=prefixes.new())
    try:
        a.put(tl.StoredEntry("ns", "k", b"v", 0.0))
        assert b.get("ns", "k") is None
        assert b.usage() == (0, 0)
        assert a.secret != b.secret
        assert b.delete(tl.Selector()) == []
        assert a.usage() == (1, 1)
    finally:
        a.close()
        b.close()


def test_an_unreachable_server_is_a_typed_error_naming_it() -> None:
    """No server at the URL: the store opens (it reads nothing yet), and its first use raises
    StoreBackendError naming the server and saying how to start one, with redis-py's error as
    the cause."""
    store = RedisStore(DEAD_URL, timeout_s=0.2)
    for use in (lambda: store.secret, lambda: store.get("ns", "k")):
        with pytest.raises(tl.StoreBackendError, match=r"redis://127\.0\.0\.1:1/0") as caught:
            use()
        assert "redis-server" in str(caught.value)
        assert type(caught.value.__cause__).__module__.startswith("redis")


def test_caches_start_while_the_server_is_down_and_work_once_it_is_up() -> None:
    """A replica starting before Redis: its completion and retrieval caches open, miss and drop
    writes (counted) while the server is down, and hit once it answers, with no restart."""
    from scripts.with_redis import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    cache = tl.CompletionCache(f"{url}?timeout_s=0.3", clock=FakeClock())
    retrieval = tl.RetrievalCache(f"{url}?timeout_s=0.3")
    request = tl.CacheRequest.from_openai(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    )
    lookup = cache.lookup(request)
    assert not lookup.hit
    assert "store failed" in lookup.reason
    assert cache.lookup_many([request])[0].hit is False
    assert not cache.store(request, "hello")
    assert cache.stats().store_errors >= 3
    assert retrieval.get("refunds", index_version="v1") is None
    retrieval.put("refunds", ["d1"], index_version="v1")  # dropped, no exception
    assert retrieval.stats().store_errors >= 2
    with own_server(port):
        assert cache.store(request, "hello")
        assert cache.lookup(request).value == "hello"
        retrieval.put("refunds", ["d1"], index_version="v1")
        assert retrieval.get("refunds", index_version="v1") == ["d1"]


def test_a_lost_server_makes_cache_lookups_misses_and_writes_dropped() -> None:
    """When the server goes away under a completion cache, lookups miss and writes are dropped,
    each counted as a store error; the model call never fails."""
    with own_server() as url:
        store = RedisStore(url, timeout_s=0.5)
        cache = tl.CompletionCache(store=store, clock=FakeClock())
        request = tl.CacheRequest.from_openai(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        )
        assert cache.store(request, "hello")
        assert cache.lookup(request).value == "hello"
    # the server is gone
    assert not cache.lookup(request).hit
    assert not cache.store(request, "hello again")
    assert cache.stats().store_errors >= 2  # (stats() met the lost server too)
    with pytest.raises(tl.StoreBackendError, match=url):
        store.get("ns", "k")


def test_a_closed_store_names_the_server(prefixes: Prefixes) -> None:
    """After close(), operations raise StoreClosedError naming the server."""
    store = RedisStore(URL, prefix=prefixes.new())
    store.close()
    with pytest.raises(tl.StoreClosedError, match="redis://"):
        store.put(tl.StoredEntry("ns", "k", b"v", 0.0))


def test_without_redis_py_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py, building a RedisStore raises MissingDependencyError naming the extra."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    with pytest.raises(tl.MissingDependencyError, match=r"tokenlean\[redis\]"):
        RedisStore(URL)


def test_bad_bounds_and_prefix_are_configuration_errors() -> None:
    """Bounds below 1 and an empty prefix are refused before any connection."""
    for kwargs in ({"max_entries": 0}, {"max_bytes": -1}, {"prefix": ""}):
        with pytest.raises(tl.ConfigurationError):
            RedisStore(URL, **kwargs)  # type: ignore[arg-type]


def _lose_data(prefix: str) -> None:
    """The server loses the prefix's data (FLUSHDB, a restart without persistence)."""
    import redis

    client = redis.Redis.from_url(URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _ask(text: str) -> tl.CacheRequest:
    return tl.CacheRequest(model="m", messages=({"role": "user", "content": text},))


@contextmanager
def _after_a_loss(
    prefixes: Prefixes,
) -> Iterator[tuple[tl.CompletionCache, Callable[[], tl.CompletionCache]]]:
    """Replica a stores an answer, then the server loses the data; ``start()`` starts another
    replica on the same URI. Every replica is closed at the end."""
    prefix = prefixes.new()
    uri = f"{URL}?prefix={prefix}"
    opened = [tl.CompletionCache(uri)]

    def start() -> tl.CompletionCache:
        opened.append(tl.CompletionCache(uri))
        return opened[-1]

    try:
        opened[0].store(_ask("q0"), "v0", tenant="acme")
        _lose_data(prefix)
        yield opened[0], start
    finally:
        for cache in opened:
            cache.close()


def test_a_running_replica_writes_its_secret_back_after_the_server_lost_it(
    prefixes: Prefixes,
) -> None:
    """After a data loss, the first write of a running replica restores its key secret, so a
    replica started later derives the same keys: they share entries and invalidations."""
    with _after_a_loss(prefixes) as (a, start):
        assert a.store(_ask("q1"), "v1", tenant="acme")
        b = start()
        assert b.lookup(_ask("q1"), tenant="acme").hit
        b.store(_ask("q2"), "v2", tenant="acme")
        assert a.lookup(_ask("q2"), tenant="acme").hit
        assert a.invalidate(tenant="acme") == 2
        assert not b.lookup(_ask("q2"), tenant="acme").hit


def test_a_replica_adopts_a_secret_another_replica_made_after_a_data_loss(
    prefixes: Prefixes,
) -> None:
    """When a replica started after the loss made a new secret first, the older replica's next
    write is refused (a typed error; the cache drops it and counts it) and it then uses the
    server's secret: one write lost, never two worlds."""
    with _after_a_loss(prefixes) as (a, start):
        b = start()
        b.store(_ask("q1"), "v1", tenant="acme")
        store = a.store_backend
        assert isinstance(store, RedisStore)
        with pytest.raises(tl.StoreBackendError, match="key secret changed"):
            store.put(tl.StoredEntry("ns", "k", b"v", 0.0))
        assert a.store(_ask("q2"), "v2", tenant="acme")  # with the server's secret now
        assert a.lookup(_ask("q1"), tenant="acme").hit
        assert b.lookup(_ask("q2"), tenant="acme").hit
        assert b.invalidate(tenant="acme") == 2
        assert not a.lookup(_ask("q2"), tenant="acme").hit


def test_an_invalidation_made_with_a_lost_secret_is_refused(prefixes: Prefixes) -> None:
    """An invalidation keyed with a secret the server no longer holds would match nothing: it
    raises, and the retry (with the server's secret) removes the entries."""
    with _after_a_loss(prefixes) as (a, start):
        b = start()
        b.store(_ask("q1"), "v1", tenant="acme")
        with pytest.raises(tl.StoreBackendError, match="key secret changed"):
            a.invalidate(tenant="acme")
        assert a.invalidate(tenant="acme") == 1
        assert not b.lookup(_ask("q1"), tenant="acme").hit


def test_a_write_keyed_before_the_secret_changed_is_removed_again(prefixes: Prefixes) -> None:
    """Another thread's refused write can make the replica adopt the server's secret while
    this write's keys were made with the old one: the entry would be unreachable and escape
    invalidation by tenant, so the cache removes it and drops the write."""
    with _after_a_loss(prefixes) as (a, start):
        b = start()
        b.store(_ask("q1"), "v1", tenant="acme")
        store = a.store_backend
        assert isinstance(store, RedisStore)
        partitions = a._partitions
        original = partitions.put

        def put_after_another_threads_refused_write(entry: Any, vector: Any = None) -> None:
            with pytest.raises(tl.StoreBackendError):
                store.put(tl.StoredEntry("ns", "k", b"v", 0.0))  # the other thread's write
            original(entry, vector)

        partitions.put = put_after_another_threads_refused_write  # type: ignore[method-assign]
        assert a.store(_ask("q2"), "v2", tenant="acme") is False
        partitions.put = original  # type: ignore[method-assign]
        assert a.stats().store_errors >= 1
        assert b.invalidate(tenant="acme") == 1  # q1: nothing keyed with the old secret is left
        assert store.usage()[0] == 0
