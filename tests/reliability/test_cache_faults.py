"""The caches fail open: a store fault is a counted miss or a dropped write, never a failed call.

Faults are injected the way an operator meets them: SQLite's own read-only and full-disk errors
(``PRAGMA query_only`` and ``PRAGMA max_page_count`` on the store's connection, since the suite
may run as root, which ignores file modes), a real chmod when not root, and custom stores that
raise.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean._cache import store_faults
from tokenlean._cache.store_faults import GuardedStore
from tokenlean.testing import FakeClock, HashingEmbedder

SECRET_QUESTION = "how do I reset the password of ada.lovelace@example.com"


def req(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    )


def connection(store: tl.SQLiteStore) -> sqlite3.Connection:
    """The store's SQLite connection, to inject faults SQLite itself raises."""
    conn: sqlite3.Connection = store._conn
    return conn


def make_read_only(store: tl.SQLiteStore) -> None:
    """Every write now fails as on a read-only file (SQLITE_READONLY)."""
    connection(store).execute("PRAGMA query_only = ON")


def fill_disk(store: tl.SQLiteStore) -> None:
    """Every write needing a new page now fails as on a full disk (SQLITE_FULL)."""
    conn = connection(store)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


class BrokenStore(tl.MemoryStore):
    """A custom store that raises ``error`` from every operation while ``broken``, and from
    reads of ``broken_layer``'s entries."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.broken = False
        self.broken_layer: str | None = None

    def _fail(self) -> None:
        if self.broken:
            raise self.error

    def get(self, namespace: str, key: str) -> tl.StoredEntry | None:
        self._fail()
        entry = super().get(namespace, key)
        if entry is not None and entry.layer == self.broken_layer:
            raise self.error
        return entry

    def put(self, entry: tl.StoredEntry) -> list[tuple[str, str]]:
        self._fail()
        return super().put(entry)

    def delete(self, selector: tl.Selector) -> list[tuple[str, str]]:
        self._fail()
        return super().delete(selector)

    def scan(self, layer: str | None = None) -> Iterator[tl.StoredEntry]:
        self._fail()
        return super().scan(layer)

    def usage(self) -> tuple[int, int]:
        self._fail()
        return super().usage()

    def __repr__(self) -> str:
        return "BrokenStore('redis://cache.internal:6379/0')"


ERRORS = [
    ConnectionError("connection reset by peer"),
    OSError(28, "No space left on device"),
    RuntimeError("backend exploded"),
    sqlite3.OperationalError("database is locked"),
    tl.CorruptedStoreError("cache.db is damaged"),
]


def semantic_cache(store: tl.CacheStore, **options: Any) -> tl.CompletionCache:
    """A semantic cache on ``store``: the static rule, or error-bounded given max_error_rate."""
    if "max_error_rate" not in options:
        options["threshold"] = 0.7
    policy = tl.CachePolicy.semantic(compare=tl.last_user_turn, **options)
    return tl.CompletionCache(
        store, policy=policy, embedder=HashingEmbedder(64), collector=tl.MetricsCollector()
    )


# ------------------------------------------------------------------ SQLite faults


def test_a_read_only_store_still_answers_lookups_and_drops_writes(tmp_path: Path) -> None:
    """On a read-only file, stored answers are still served, and a write is a counted no-op."""
    store = tl.SQLiteStore(tmp_path / "cache.db")
    cache = semantic_cache(store)
    assert cache.store(req("where is my parcel right now"), "It left the depot.")
    make_read_only(store)
    for _ in range(3):
        assert cache.lookup(req("where is my parcel right now")).value == "It left the depot."
    assert cache.store(req("what are the opening hours"), "9 to 5") is False
    assert not cache.lookup(req("what are the opening hours")).hit
    stats = cache.stats()
    assert stats.store_errors == 1
    assert stats.writes == 1
    assert cache.collector is not None
    assert cache.collector.snapshot()["cache_store_errors"] == {"semantic": 1}


def test_lookups_never_write_to_the_file(tmp_path: Path) -> None:
    """Hits and misses, exact and semantic, change nothing in the database."""
    store = tl.SQLiteStore(tmp_path / "cache.db")
    cache = semantic_cache(store)
    cache.store(req("where is my parcel right now"), "It left the depot.")
    conn = connection(store)
    changes = conn.total_changes
    for text in ("where is my parcel right now", "where is my parcel now", "opening hours?"):
        cache.lookup(req(text))
    assert conn.total_changes == changes


def test_a_full_disk_drops_writes_and_keeps_serving(tmp_path: Path) -> None:
    """With the disk full, existing entries still hit and new writes are counted, dropped."""
    store = tl.SQLiteStore(tmp_path / "cache.db")
    cache = tl.CompletionCache(store)
    cache.store(req("hello"), "Hi!")
    fill_disk(store)
    assert cache.store(req("a large answer"), "x" * 200_000) is False
    assert cache.lookup(req("hello")).value == "Hi!"
    assert not cache.lookup(req("a large answer")).hit
    assert cache.stats().store_errors == 1


def test_a_locked_store_drops_the_write_after_its_lock_timeout(tmp_path: Path) -> None:
    """A write waiting on another connection's lock gives up after lock_timeout_s; reads go on."""
    path = tmp_path / "cache.db"
    cache = tl.CompletionCache(tl.SQLiteStore(path, lock_timeout_s=0.2))
    cache.store(req("hello"), "Hi!")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        assert cache.store(req("bye"), "Bye!") is False
        assert cache.lookup(req("hello")).value == "Hi!"
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert cache.stats().store_errors == 1
    assert cache.store(req("bye"), "Bye!") is True


def _modes_are_enforced(folder: Path) -> bool:
    """False for a user file modes do not stop (root, with its capabilities)."""
    probe = folder / "probe"
    probe.write_bytes(b"")
    probe.chmod(0o444)
    try:
        with probe.open("ab"):
            return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o644)


def test_a_read_only_file_opens_and_serves(tmp_path: Path) -> None:
    """A store file without write permission opens, answers lookups and drops writes."""
    if not _modes_are_enforced(tmp_path):
        pytest.skip("this user writes to read-only files (root): see PRAGMA query_only above")
    path = tmp_path / "cache.db"
    cache = tl.CompletionCache(tl.SQLiteStore(path))
    cache.store(req("hello"), "Hi!")
    cache.close()
    path.chmod(0o444)
    try:
        cache = tl.CompletionCache(tl.SQLiteStore(path))
        assert cache.lookup(req("hello")).value == "Hi!"
        assert cache.store(req("bye"), "Bye!") is False
        assert cache.stats().store_errors == 1
        cache.close()
    finally:
        path.chmod(0o644)


def test_store_errors_are_typed_name_the_file_and_keep_the_cause(tmp_path: Path) -> None:
    """Each SQLite failure is a StoreError subclass naming the file, SQLite's error its cause."""
    path = tmp_path / "cache.db"
    store = tl.SQLiteStore(path)
    entry = tl.StoredEntry("ns", "k", b"v" * 100_000, 0.0)
    make_read_only(store)
    with pytest.raises(tl.StoreReadOnlyError, match=re.escape(str(path))) as read_only:
        store.put(entry)
    assert isinstance(read_only.value.__cause__, sqlite3.OperationalError)
    connection(store).execute("PRAGMA query_only = OFF")
    fill_disk(store)
    with pytest.raises(tl.StoreFullError, match=re.escape(str(path))) as full:
        store.put(entry)
    assert isinstance(full.value.__cause__, sqlite3.OperationalError)
    store.close()
    with pytest.raises(tl.StoreClosedError, match=re.escape(str(path))):
        store.get("ns", "k")


def test_a_failed_rollback_does_not_mask_the_real_error(tmp_path: Path) -> None:
    """When the ROLLBACK after a failed write fails too, the write's own error is raised."""
    store = tl.SQLiteStore(tmp_path / "cache.db")
    real = connection(store)

    class FailingRollback:
        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            if sql == "ROLLBACK":
                real.execute("ROLLBACK")
                raise sqlite3.OperationalError("cannot rollback - no transaction is active")
            return real.execute(sql, *args)

        def executemany(self, sql: str, rows: Any) -> Any:
            return real.executemany(sql, rows)

    store._conn = FailingRollback()  # type: ignore[assignment]
    with pytest.raises(tl.StoreFullError, match="disk is full"):
        store.put(tl.StoredEntry("ns", "k", b"v", 0.0))
    store._conn = real
    assert store.put(tl.StoredEntry("ns", "k", b"v", 0.0)) == []
    assert store.get("ns", "k") is not None


def test_recency_from_lookups_survives_a_restart(tmp_path: Path) -> None:
    """Lookups' recency, kept in memory, is written on close and still decides eviction."""
    path = tmp_path / "cache.db"
    store = tl.SQLiteStore(path, max_entries=2)
    store.put(tl.StoredEntry("ns", "a", b"1", 0.0))
    store.put(tl.StoredEntry("ns", "b", b"2", 0.0))
    assert store.get("ns", "a") is not None  # now b is the least recently used
    store.close()
    reopened = tl.SQLiteStore(path, max_entries=2)
    assert reopened.put(tl.StoredEntry("ns", "c", b"3", 0.0)) == [("ns", "b")]


def test_expired_entries_are_deleted_by_the_next_write_not_the_lookup(tmp_path: Path) -> None:
    """A lookup meeting an expired entry misses without writing; the next write deletes it."""
    clock = FakeClock()
    store = tl.SQLiteStore(tmp_path / "cache.db")
    cache = tl.CompletionCache(store, policy=tl.CachePolicy.exact(ttl_s=10), clock=clock)
    cache.store(req("hello"), "Hi!")
    clock.advance(11)
    changes = connection(store).total_changes
    assert not cache.lookup(req("hello")).hit
    assert connection(store).total_changes == changes
    assert store.usage()[0] == 1
    cache.store(req("bye"), "Bye!")
    assert store.usage()[0] == 1
    assert cache.lookup(req("bye")).value == "Bye!"


# ------------------------------------------------------------------ custom stores


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_raising_custom_store_never_fails_a_completion_call(error: Exception) -> None:
    """Exact and semantic lookups miss, writes return False, and every fault is counted."""
    store = BrokenStore(error)
    cache = semantic_cache(store)
    cache.store(req("where is my parcel right now"), "It left the depot.")
    store.broken = True
    result = cache.lookup(req("where is my parcel right now"))
    assert (result.hit, result.reason) == (False, f"miss: the store failed ({_kind(error)})")
    assert cache.lookup_many([req("where is my parcel now")])[0].hit is False
    assert cache.store(req("what are the opening hours"), "9 to 5") is False
    assert cache.feedback("ns.key.token", correct=False) is False
    stats = cache.stats()
    assert stats.store_errors == 5  # two lookups, a write, the feedback, the usage
    assert stats.entries == 0
    store.broken = False  # the store recovers, and so does the cache
    assert cache.lookup(req("where is my parcel right now")).value == "It left the depot."


def _kind(error: Exception) -> str:
    return type(error).__name__ if isinstance(error, tl.StoreError) else "StoreBackendError"


def test_an_error_bounded_route_fails_open_and_keeps_its_saved_evidence() -> None:
    """A fault while loading a route's evidence is a miss, and never overwrites the evidence."""
    store = BrokenStore(ConnectionError("connection reset"))
    first = semantic_cache(store, max_error_rate=0.05)
    first.store(req("where is my parcel right now"), "It left the depot.")
    pairs = [(f"status of order {i}", f"status of my order {i}", True) for i in range(80)]
    assert first.calibrate(pairs) == 80
    second = semantic_cache(store, max_error_rate=0.05)  # a restart on the same store
    store.broken_layer = "acceptance"  # the saved evidence cannot be read
    result = second.lookup(req("where is my parcel now"))
    assert (result.hit, result.reason) == (False, "miss: the store failed (StoreBackendError)")
    assert second.store(req("where is my parcel now"), "It left the depot.")
    second.flush()
    store.broken_layer = None
    assert second.acceptance()["evidence"] == 80
    assert second.stats().store_errors == 1


def test_calibrate_and_invalidate_raise_the_typed_store_error() -> None:
    """Administrative writes are the point of the call: their store faults are raised."""
    store = BrokenStore(ConnectionError("connection reset"))
    cache = semantic_cache(store, max_error_rate=0.05)
    store.broken = True
    with pytest.raises(tl.StoreBackendError, match=r"redis://cache\.internal") as raised:
        cache.invalidate(tenant="acme")
    assert isinstance(raised.value.__cause__, ConnectionError)
    with pytest.raises(tl.StoreError):
        cache.calibrate([("status of order 1", "status of my order 1", True)])
    with pytest.raises(tl.StoreError):
        cache.purge_expired()


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_a_raising_custom_store_never_fails_a_retrieval(error: Exception) -> None:
    """The retrieval cache misses and drops writes on a store fault, and counts them."""
    store = BrokenStore(error)
    collector = tl.MetricsCollector()
    cache = tl.RetrievalCache(store, collector=collector)
    cache.put("refund policy", ["doc-1"], index_version="v1")
    store.broken = True
    assert cache.get("refund policy", index_version="v1") is None
    cache.put("shipping", ["doc-2"], index_version="v1")
    assert cache.stats().store_errors == 3
    assert collector.snapshot()["cache_store_errors"] == {"retrieval": 3}
    store.broken = False
    assert cache.get("refund policy", index_version="v1") == ["doc-1"]


def test_bad_input_still_raises_with_a_broken_store() -> None:
    """Failing open covers store faults only: the caller's own mistakes still raise."""
    store = BrokenStore(ConnectionError("connection reset"))
    store.broken = True
    cache = semantic_cache(store)
    with pytest.raises(tl.ConfigurationError):
        cache.lookup(req("hello"), route="no-such-route")
    with pytest.raises(tl.ConfigurationError):
        cache.lookup(req("hello"), tenant="")
    with pytest.raises(tl.NotSerializableError):
        cache.store(req("hello"), {1, 2})
    with pytest.raises(tl.MalformedRequestError):
        tl.CacheRequest.from_openai({"model": "m"})
    with pytest.raises(tl.InvalidInputError):
        tl.RetrievalCache(store).put("q", "doc-1", index_version="v1")
    assert cache.stats().store_errors == 1  # stats' own usage() only


def test_guarded_store_wraps_foreign_exceptions_once() -> None:
    """A backend's own exception becomes a StoreBackendError naming the store, with the cause."""
    store = BrokenStore(ConnectionError("connection reset by peer"))
    store.broken = True
    guarded = GuardedStore(store)
    with pytest.raises(tl.StoreBackendError) as raised:
        guarded.get("ns", "k")
    assert "redis://cache.internal:6379/0" in str(raised.value)
    assert "connection reset by peer" in str(raised.value)
    assert isinstance(raised.value.__cause__, ConnectionError)
    store.error = tl.StoreFullError("quota exceeded on redis://cache.internal:6379/0")
    with pytest.raises(tl.StoreFullError):  # already typed: passed through as it is
        guarded.get("ns", "k")


# ------------------------------------------------------------------ logging


def test_store_faults_warn_once_a_minute_per_store_and_never_show_the_prompt(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many faults give one warning naming the store, without prompt text, until a minute."""
    now = [1_000_000.0]
    monkeypatch.setattr(store_faults, "_now", lambda: now[0])
    monkeypatch.setattr(store_faults, "_warned", {})
    store = BrokenStore(ConnectionError("connection reset by peer"))
    cache = semantic_cache(store)
    store.broken = True
    with caplog.at_level(logging.WARNING, logger="tokenlean.cache"):
        for _ in range(5):
            cache.lookup(req(SECRET_QUESTION))
            cache.store(req(SECRET_QUESTION), "the new password is hunter2")
        now[0] += 59
        cache.lookup(req(SECRET_QUESTION))
        warnings = [r for r in caplog.records if r.name == "tokenlean.cache"]
        assert len(warnings) == 1
        now[0] += 2
        cache.lookup(req(SECRET_QUESTION))
    warnings = [r.getMessage() for r in caplog.records if r.name == "tokenlean.cache"]
    assert len(warnings) == 2
    assert all("redis://cache.internal:6379/0" in message for message in warnings)
    for message in warnings:
        assert "ada.lovelace" not in message
        assert "hunter2" not in message
        assert "password" not in message
    assert "12 store error(s)" in warnings[1]


def test_concurrent_lookups_on_a_failing_store_all_miss() -> None:
    """Eight threads looking up through a failing store all get misses, no exception."""
    store = BrokenStore(RuntimeError("flaky"))
    cache = semantic_cache(store)
    store.broken = True
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(25):
                assert not cache.lookup(req(f"question {i}")).hit
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.stats().store_errors == 8 * 25 + 1


def test_a_read_only_store_never_fails_a_langchain_model_call(tmp_path: Path) -> None:
    """Through set_llm_cache, a read-only store serves what it holds and the model the rest."""
    pytest.importorskip("langchain_tokenlean")
    from langchain_core.globals import set_llm_cache
    from langchain_core.language_models import FakeListChatModel
    from langchain_tokenlean import TokenleanCache

    store = tl.SQLiteStore(tmp_path / "cache.db")
    cache = TokenleanCache(tl.CompletionCache(store), tenant="acme")
    model = FakeListChatModel(responses=["first", "second", "third"])
    set_llm_cache(cache)
    try:
        assert model.invoke("hello").content == "first"
        make_read_only(store)
        assert model.invoke("hello").content == "first"  # from the read-only cache
        assert model.invoke("bye").content == "second"  # from the model; the write is dropped
        assert model.invoke("bye").content == "third"  # so the model again
    finally:
        set_llm_cache(None)
    assert cache.cache.stats().store_errors == 2  # the two dropped writes
