"""The behaviour suite every cache store must pass (see :mod:`tokenlean.testing`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._cache.uri import open_store
from tokenlean._errors import StoreError
from tokenlean._redis_client import MASK
from tokenlean.testing._workers import run_workers

__all__ = ["CacheStoreContract", "assert_no_password"]


def assert_no_password(uri: str) -> None:
    """Fail unless every password ``uri`` holds (in its user part or a ``password``-like
    option) is the ``***`` mask."""
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        password = unquote(userinfo.partition(":")[2])
        assert password in ("", MASK), f"{uri} holds a password"
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if "password" in name.lower():
            assert value == MASK, f"{uri} holds a password in {name}"


def _entry(key: str, **fields: Any) -> StoredEntry:
    base: dict[str, Any] = {
        "namespace": "ns",
        "key": key,
        "payload": f"payload-{key}".encode(),
        "created_at": 10.0,
    }
    base.update(fields)
    return StoredEntry(**base)


class CacheStoreContract:
    """Behaviour every :class:`CacheStore` must have. Subclass as ``Test…`` and implement
    :meth:`make_store`; persistent stores also implement :meth:`reopen`. A store with a ``uri``
    must be reopened from it by :meth:`open_uri` (:func:`tokenlean.open_store` unless
    overridden), and its ``uri`` must never hold a password."""

    persistent = False

    def make_store(self, **limits: Any) -> CacheStore:
        """A new, empty store with the given ``max_entries`` / ``max_bytes`` limits."""
        raise NotImplementedError

    def reopen(self, store: CacheStore) -> CacheStore:
        """Close ``store`` and open the same storage again (persistent stores only)."""
        raise NotImplementedError

    def open_uri(self, uri: str) -> CacheStore:
        """The store a ``uri`` names (for stores with a ``uri``; override for URIs that
        :func:`tokenlean.open_store` does not read)."""
        return open_store(uri)

    def test_secret_is_random_and_long_enough(self) -> None:
        """Each store has its own secret of at least 16 bytes."""
        a, b = self.make_store(), self.make_store()
        assert len(a.secret) >= 16
        assert a.secret != b.secret
        assert a.secret == a.secret

    def test_put_then_get_round_trips_every_field(self) -> None:
        """An entry comes back exactly as written."""
        store = self.make_store()
        entry = _entry(
            "k1",
            expires_at=99.5,
            layer="semantic",
            tenant="t",
            tags=("a", "b"),
            plan_version="v2",
            vector=b"\x00\x01" * 8,
            features='{"n":[]}',
        )
        assert store.put(entry) == []
        assert store.get("ns", "k1") == entry
        assert store.get("ns", "missing") is None
        assert store.get("other", "k1") is None

    def test_replacing_an_entry_keeps_one_copy(self) -> None:
        """A second put at the same address replaces the first; usage follows."""
        store = self.make_store()
        store.put(_entry("k", payload=b"x" * 10))
        store.put(_entry("k", payload=b"y" * 4))
        assert store.get("ns", "k").payload == b"y" * 4  # type: ignore[union-attr]
        assert store.usage() == (1, 4)

    def test_delete_by_each_criterion(self) -> None:
        """Selectors remove exactly the matching entries and report them."""
        store = self.make_store()
        store.put(_entry("a", tenant="t1", tags=("x",), plan_version="v1"))
        store.put(_entry("b", tenant="t2", tags=("y",), plan_version="v1", layer="semantic"))
        store.put(_entry("c", tenant="t2", tags=("x", "y"), plan_version="v2", expires_at=5.0))
        assert sorted(store.delete(Selector(expired_at=6.0))) == [("ns", "c")]
        assert store.delete(Selector(tag="y", layer="exact")) == []
        assert store.delete(Selector(tag="y")) == [("ns", "b")]
        assert store.delete(Selector(tenant="t1", plan_version="v2")) == []
        assert store.delete(Selector(namespace="ns", key="a")) == [("ns", "a")]
        assert store.usage() == (0, 0)

    def test_scan_filters_by_layer(self) -> None:
        """scan() lists all entries, or one layer's."""
        store = self.make_store()
        store.put(_entry("a"))
        store.put(_entry("b", layer="semantic"))
        assert {e.key for e in store.scan()} == {"a", "b"}
        assert [e.key for e in store.scan(layer="semantic")] == ["b"]

    def test_entry_limit_evicts_least_recently_used(self) -> None:
        """Past max_entries the least recently used entry goes; a get refreshes recency."""
        store = self.make_store(max_entries=2)
        store.put(_entry("a"))
        store.put(_entry("b"))
        assert store.get("ns", "a") is not None
        assert store.put(_entry("c")) == [("ns", "b")]
        assert {e.key for e in store.scan()} == {"a", "c"}

    def test_byte_limit_evicts_until_under_the_limit(self) -> None:
        """Past max_bytes entries are evicted oldest first; the newest always stays."""
        store = self.make_store(max_bytes=25)
        for key in "abc":
            store.put(_entry(key, payload=b"z" * 10))
        assert store.usage() == (2, 20)
        assert store.get("ns", "a") is None
        store.put(_entry("big", payload=b"z" * 100))
        assert {e.key for e in store.scan()} == {"big"}

    def test_concurrent_writers_lose_nothing(self) -> None:
        """Eight threads writing and reading their own keys all see their entries."""
        store = self.make_store()

        def work(worker: int) -> None:
            for i in range(50):
                store.put(_entry(f"{worker}-{i}"))
                assert store.get("ns", f"{worker}-{i}") is not None

        assert run_workers(work, 8) == []
        assert store.usage()[0] == 400

    def test_a_closed_store_refuses_work(self) -> None:
        """After close(), operations raise StoreError."""
        store = self.make_store()
        store.close()
        try:
            store.get("ns", "k")
        except StoreError:
            return
        raise AssertionError("a closed store answered")

    def test_entries_and_secret_survive_a_restart(self) -> None:
        """A persistent store reopened holds the same entries, usage and secret."""
        if not self.persistent:
            return
        store = self.make_store()
        entry = _entry("k", tags=("t",), vector=b"\x01" * 4, features="{}")
        store.put(entry)
        secret = store.secret
        reopened = self.reopen(store)
        assert reopened.get("ns", "k") == entry
        assert reopened.secret == secret
        assert reopened.usage() == (1, entry.size)

    def test_the_uri_reopens_the_store(self) -> None:
        """A store's ``uri`` (stores that have one) opens a store with the same ``uri`` (the
        same bounds); a persistent one holds the same entries and secret."""
        store = self.make_store(max_entries=50, max_bytes=100_000)
        uri = getattr(store, "uri", None)
        if uri is None:
            return
        assert isinstance(uri, str)
        entry = _entry("k", tags=("t",), vector=b"\x01" * 4, features="{}")
        store.put(entry)
        again = self.open_uri(uri)
        try:
            assert getattr(again, "uri", None) == uri
            for bound in ("max_entries", "max_bytes"):
                assert getattr(again, bound, None) == getattr(store, bound, None), bound
            if self.persistent:
                assert again.get("ns", "k") == entry
                assert again.secret == store.secret
                assert again.usage() == (1, entry.size)
        finally:
            again.close()

    def test_the_uri_never_holds_a_password(self) -> None:
        """A store's ``uri`` (stores that have one) holds ``***`` wherever a password would
        be: it is safe to log or serialize."""
        uri = getattr(self.make_store(), "uri", None)
        if uri is not None:
            assert_no_password(uri)
