"""Stores chosen by URI: each scheme opens its backend with its options; anything else is a
configuration error naming the accepted forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes
from tokenlean.testing import CacheStoreContract, TranscriptStoreContract

__all__ = ["prefixes"]  # the fixture, imported for pytest


def test_memory_uri_opens_a_memory_store_with_its_bounds() -> None:
    """memory:// is a MemoryStore; ?max_entries and ?max_bytes set its bounds."""
    store = tl.open_store("memory://?max_entries=5&max_bytes=100")
    assert isinstance(store, tl.MemoryStore)
    assert (store.max_entries, store.max_bytes) == (5, 100)
    assert isinstance(tl.open_transcript_store("memory://"), tl.MemoryTranscriptStore)


def test_sqlite_uri_opens_the_file_relative_or_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///name is relative to the working folder, sqlite:////path absolute."""
    monkeypatch.chdir(tmp_path)
    relative = tl.open_store("sqlite:///cache.db?max_entries=3")
    assert isinstance(relative, tl.SQLiteStore)
    assert relative.max_entries == 3
    assert (tmp_path / "cache.db").exists()
    relative.close()
    absolute = tl.open_store(f"sqlite:///{tmp_path / 'abs.db'}")
    assert isinstance(absolute, tl.SQLiteStore)
    assert absolute.path == tmp_path / "abs.db"
    absolute.close()
    transcripts = tl.open_transcript_store(f"sqlite:///{tmp_path / 'memory.db'}")
    assert isinstance(transcripts, tl.SQLiteTranscriptStore)
    transcripts.close()


def test_redis_uri_opens_a_shared_store_with_prefix_and_bounds(prefixes: Prefixes) -> None:
    """redis://host:port/db with ?prefix and ?max_entries is a RedisStore on that server; the
    same URI opens its transcript store."""
    prefix = prefixes.new()
    store = tl.open_store(f"{URL}?prefix={prefix}&max_entries=7&timeout_s=2&feed_length=500")
    assert isinstance(store, tl.RedisStore)
    assert (store.prefix, store.max_entries, store.url) == (prefix, 7, URL)
    assert store.feed_length == 500
    store.close()
    default = tl.open_store(f"{URL}?prefix={prefix}")
    assert isinstance(default, tl.RedisStore)
    assert default.feed_length == 100_000
    default.close()
    with pytest.raises(tl.ConfigurationError, match="feed_length"):
        tl.open_store(f"{URL}?prefix={prefix}&feed_length=many")
    transcripts = tl.open_transcript_store(f"{URL}?prefix={prefix}")
    assert isinstance(transcripts, tl.RedisTranscriptStore)
    assert transcripts.prefix == prefix
    transcripts.close()


@pytest.mark.parametrize(
    "uri",
    ["postgres://db/cache", "cache.db", "memory://x", "sqlite://", "", "file:///tmp/cache.db"],
)
def test_an_unknown_uri_names_the_accepted_schemes(uri: str) -> None:
    """A URI of no known form raises ConfigurationError listing memory, sqlite and redis."""
    for opener in (tl.open_store, tl.open_transcript_store):
        with pytest.raises(tl.ConfigurationError, match=r"memory://.*sqlite:///.*redis://"):
            opener(uri)


def test_bad_options_are_configuration_errors() -> None:
    """An unknown option or a bound that is not a number is refused."""
    for uri in ("memory://?max_entrys=5", "memory://?max_entries=many", "sqlite:///x.db?prefix=a"):
        with pytest.raises(tl.ConfigurationError):
            tl.open_store(uri)
    with pytest.raises(tl.ConfigurationError, match="no options"):
        tl.open_transcript_store("memory://?prefix=a")


def test_retrieval_caches_share_results_through_a_store_uri(
    prefixes: Prefixes, tmp_path: Path
) -> None:
    """Two RetrievalCaches opened from one URI (two replicas) share their results, on SQLite
    and on Redis; another index version still misses."""
    for uri in (f"sqlite:///{tmp_path / 'r.db'}", f"{URL}?prefix={prefixes.new()}"):
        first, second = tl.RetrievalCache(uri), tl.RetrievalCache(uri)
        first.put("Refund policy", ["doc-3", "doc-1"], index_version="v7")
        assert second.get("refund   POLICY", index_version="v7") == ["doc-3", "doc-1"]
        assert second.get("refund policy", index_version="v8") is None
        for cache in (first, second):
            cache.store_backend.close()


@pytest.mark.parametrize("opener", [tl.open_store, tl.open_transcript_store])
def test_a_misspelt_redis_option_fails_at_open_naming_it(opener: object) -> None:
    """An option neither tokenlean nor redis-py takes (a typo) is a ConfigurationError when the
    store is opened, not a TypeError at its first use; no server is needed to tell."""
    assert callable(opener)
    with pytest.raises(tl.ConfigurationError, match="prefx"):
        opener("redis://127.0.0.1:1/0?prefx=myapp:")
    with pytest.raises(tl.ConfigurationError, match="socket_timeout"):
        opener("redis://127.0.0.1:1/0?socket_timeout=soon")


# ------------------------------------------------------------------ each store's uri

SECRET = "S3cretPW"
DEAD = "127.0.0.1:1"  # nothing listens on port 1: building a Redis store does not connect


def test_a_memory_store_uri_opens_a_store_like_it() -> None:
    """A memory store's uri is memory:// with its bounds; it opens a new store with the same
    bounds (and the same uri)."""
    assert tl.MemoryStore().uri == "memory://"
    store = tl.MemoryStore(max_entries=5, max_bytes=100)
    assert store.uri == "memory://?max_entries=5&max_bytes=100"
    again = tl.open_store(store.uri)
    assert isinstance(again, tl.MemoryStore)
    assert (again.max_entries, again.max_bytes, again.uri) == (5, 100, store.uri)
    assert tl.MemoryTranscriptStore().uri == "memory://"
    assert isinstance(tl.open_transcript_store("memory://"), tl.MemoryTranscriptStore)


def test_a_sqlite_store_uri_is_its_absolute_path_fixed_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite store opened from a relative path is described by the absolute path it opened,
    even after the working folder changes; the uri reopens the same file."""
    monkeypatch.chdir(tmp_path)
    store = tl.SQLiteStore("cache.db", max_bytes=4096)
    transcripts = tl.SQLiteTranscriptStore("memory.db")
    monkeypatch.chdir(tmp_path.parent)
    assert store.uri == f"sqlite:///{tmp_path / 'cache.db'}?max_bytes=4096"
    assert transcripts.uri == f"sqlite:///{tmp_path / 'memory.db'}"
    store.put(tl.StoredEntry("ns", "k", b"v", 0.0))
    transcripts.append("acme", "s1", [tl.Turn("t0", 0, "user", "Hi", 1.0)])
    again = tl.open_store(store.uri)
    assert again.get("ns", "k") is not None
    assert (again.max_bytes, again.uri) == (4096, store.uri)  # type: ignore[attr-defined]
    reopened = tl.open_transcript_store(transcripts.uri)  # type: ignore[arg-type]
    assert [t.id for t in reopened.turns("acme", "s1")] == ["t0"]
    for opened in (store, transcripts, again, reopened):
        opened.close()  # type: ignore[attr-defined]


def test_a_sqlite_path_a_uri_cannot_carry_has_no_uri(tmp_path: Path) -> None:
    """A file whose path holds ? or # (which a URI would cut) has no uri, rather than one that
    opens another file."""
    for name in ("what?.db", "no#1.db"):
        store, transcripts = (
            tl.SQLiteStore(tmp_path / name),
            tl.SQLiteTranscriptStore(tmp_path / f"t-{name}"),
        )
        assert (store.uri, transcripts.uri) == (None, None)
        store.close()
        transcripts.close()


def test_a_redis_store_uri_keeps_the_url_as_given_with_the_store_options() -> None:
    """A Redis store's uri is the URL it was given (scheme, user, host, port, db, redis-py
    options) with the prefix, bounds, timeout and feed length first in the query."""
    store = tl.RedisStore(
        f"rediss://app@{DEAD}/3?ssl_cert_reqs=none",
        prefix="app:",
        max_entries=10,
        timeout_s=2.5,
        feed_length=500,
    )
    assert store.uri == (
        f"rediss://app@{DEAD}/3?prefix=app:&max_entries=10&feed_length=500&timeout_s=2.5"
        "&ssl_cert_reqs=none"
    )
    store.close()
    transcripts = tl.RedisTranscriptStore("unix:///run/redis.sock?db=2", prefix="p&q:")
    assert transcripts.uri == "unix:///run/redis.sock?prefix=p%26q:&timeout_s=1.0&db=2"
    transcripts.close()


def test_a_redis_store_uri_reopens_the_same_store(prefixes: Prefixes) -> None:
    """Opened from a store's uri, a Redis store has the same prefix, bounds, timeout and feed
    length, and shares the entries and turns."""
    prefix = prefixes.new()
    store = tl.open_store(f"{URL}?prefix={prefix}&max_bytes=9000&timeout_s=3&feed_length=700")
    store.put(tl.StoredEntry("ns", "k", b"v", 0.0))
    again = tl.open_store(store.uri)  # type: ignore[attr-defined]
    assert isinstance(again, tl.RedisStore)
    assert (again.prefix, again.max_bytes, again.feed_length) == (prefix, 9000, 700)
    assert again.uri == store.uri  # type: ignore[attr-defined]
    assert again.get("ns", "k") is not None
    transcripts = tl.RedisTranscriptStore(URL, prefix=prefix, timeout_s=3)
    transcripts.put_state("acme", "s1", "slots", {"city": "Paris"})
    reopened = tl.open_transcript_store(transcripts.uri)
    assert reopened.uri == transcripts.uri  # type: ignore[attr-defined]
    assert "timeout_s=3.0" in transcripts.uri
    assert reopened.get_state("acme", "s1", "slots") == {"city": "Paris"}
    for opened in (store, again, transcripts, reopened):
        opened.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "described"),
    [
        (f"redis://default:{SECRET}@{DEAD}/0", f"redis://default:***@{DEAD}/0"),
        (f"redis://:{SECRET}@{DEAD}/0", f"redis://:***@{DEAD}/0"),
        (f"rediss://app:{SECRET}@{DEAD}/2", f"rediss://app:***@{DEAD}/2"),
        (f"redis://app:p@ss:{SECRET}@{DEAD}/0", f"redis://app:***@{DEAD}/0"),  # @ in it
        (f"redis://app:S3cret%2FPW@{DEAD}/0", f"redis://app:***@{DEAD}/0"),  # percent-encoded
        (f"unix://app:{SECRET}@/run/redis.sock", "unix://app:***@/run/redis.sock"),
        (f"redis://{DEAD}/0?password={SECRET}", f"redis://{DEAD}/0"),
        (f"redis://{DEAD}/0?pass%77ord={SECRET}", f"redis://{DEAD}/0"),
    ],
)
def test_a_redis_store_uri_masks_its_password(url: str, described: str) -> None:
    """Whether in the user part or an option, the password is *** in both Redis stores' uri
    (no connection needed to tell)."""
    for store in (tl.RedisStore(url, prefix="a:"), tl.RedisTranscriptStore(url, prefix="a:")):
        uri = store.uri
        assert uri.startswith(f"{described}?prefix=a:")
        assert SECRET not in uri
        assert "S3cret" not in uri
        if "password" in url or "%77ord" in url:
            assert uri.endswith("ord=***")
        store.close()


def test_a_redis_uri_masks_ssl_password_and_keeps_a_user_without_password() -> None:
    """A TLS key's ssl_password is masked too; a user with no password (or an empty one) is
    kept as written, with no mask."""
    store = tl.RedisStore(f"rediss://{DEAD}/0?ssl_password={SECRET}&ssl_cert_reqs=none")
    assert store.uri.endswith("&ssl_password=***&ssl_cert_reqs=none")
    for url in (f"redis://app@{DEAD}/0", f"redis://app:@{DEAD}/0"):
        uri = tl.RedisTranscriptStore(url).uri
        assert uri.startswith(url + "?")
        assert "***" not in uri


@pytest.mark.parametrize(
    "uri",
    [
        f"redis://default:***@{DEAD}/0?prefix=app:",
        f"rediss://:***@{DEAD}/0",
        f"redis://app:%2A%2A%2A@{DEAD}/0",
        "unix://app:***@/run/redis.sock?db=0",
        f"redis://{DEAD}/0?prefix=app:&password=***",
        f"rediss://{DEAD}/0?ssl_password=%2A%2A%2A",
    ],
)
def test_a_masked_password_is_refused_before_connecting(uri: str) -> None:
    """A URI whose password is the *** mask (a store's uri, serialized) raises
    ConfigurationError naming it and saying to give the password back, from the openers and
    from the stores' constructors alike; nothing connects."""
    for opener in (tl.open_store, tl.open_transcript_store, tl.RedisStore, tl.RedisTranscriptStore):
        with pytest.raises(tl.ConfigurationError) as caught:
            opener(uri)
        message = str(caught.value)
        assert message.startswith(uri.replace("%2A%2A%2A", "***"))
        assert "password was removed" in message
        assert "real password" in message


def test_the_refusal_never_shows_another_password() -> None:
    """A URI with a masked password and a real one elsewhere is refused without showing the
    real one."""
    with pytest.raises(tl.ConfigurationError) as caught:
        tl.open_store(f"rediss://app:***@{DEAD}/0?ssl_password={SECRET}")
    assert SECRET not in str(caught.value)


def test_a_password_that_is_not_the_mask_is_not_refused() -> None:
    """Only the exact mask is refused: another password, or *** as some other option, opens
    (the stores connect on first use)."""
    for uri in (f"redis://app:***x@{DEAD}/0", f"redis://{DEAD}/0?prefix=***"):
        tl.open_store(uri).close()


# ------------------------------------------------------------------ the contracts' uri checks


def _leaky(uri: str) -> tuple[type[CacheStoreContract], type[TranscriptStoreContract]]:
    """Contract suites over memory stores whose ``uri`` is ``uri``."""

    class Store(tl.MemoryStore):
        @property
        def uri(self) -> str:
            return uri

    class Transcripts(tl.MemoryTranscriptStore):
        @property
        def uri(self) -> str:
            return uri

    class CacheCheck(CacheStoreContract):
        def make_store(self, **limits: Any) -> tl.CacheStore:
            return Store(**limits)

    class TranscriptCheck(TranscriptStoreContract):
        def make_store(self) -> tl.TranscriptStore:
            return Transcripts()

    return CacheCheck, TranscriptCheck


@pytest.mark.parametrize(
    "uri",
    [
        f"redis://app:{SECRET}@{DEAD}/0",
        f"redis://:{SECRET}@{DEAD}/0",
        f"redis://{DEAD}/0?password={SECRET}",
        f"rediss://{DEAD}/0?ssl_password={SECRET}",
    ],
)
def test_the_contracts_fail_a_store_whose_uri_holds_a_password(uri: str) -> None:
    """The store contracts' uri check fails a store that writes its password in its uri."""
    for contract in _leaky(uri):
        with pytest.raises(AssertionError, match="holds a password"):
            contract().test_the_uri_never_holds_a_password()


def test_the_contracts_fail_a_store_whose_uri_opens_another_store() -> None:
    """The store contracts' reopen check fails a uri that opens a store with other bounds, or
    (for a persistent store) without its data."""
    cache_check, _ = _leaky("memory://?max_entries=7")
    with pytest.raises(AssertionError, match="max_entries"):
        cache_check().test_the_uri_reopens_the_store()
    _, transcript_check = _leaky("memory://")
    transcript_check.persistent = True
    with pytest.raises(AssertionError):
        transcript_check().test_the_uri_reopens_the_store()


@pytest.mark.parametrize("uri", [f"redis://{DEAD}/notanumber", f"rediss://{DEAD}/db1"])
def test_a_database_that_is_not_a_number_is_refused(uri: str) -> None:
    """redis-py reads a database it cannot parse as 0; tokenlean refuses it, before
    connecting, from every opener."""
    for opener in (tl.open_store, tl.open_transcript_store, tl.RedisStore, tl.RedisTranscriptStore):
        with pytest.raises(tl.ConfigurationError, match="not a number"):
            opener(uri)


@pytest.mark.parametrize("store", [42, 3.5, object(), b"sqlite:///x.db"])
def test_a_store_that_is_neither_a_store_nor_a_uri_is_refused_when_built(store: Any) -> None:
    """The caches and the memory name the wrong store's type at construction, not at the first
    model call."""
    for build in (tl.CompletionCache, tl.RetrievalCache, tl.ConversationMemory):
        with pytest.raises(tl.ConfigurationError, match=f"not {type(store).__name__}"):
            build(store)


def test_one_redis_uri_with_cache_bounds_opens_the_memory_too(prefixes: Prefixes) -> None:
    """A transcript store ignores the cache stores' bounds, so a deployment gives its caches and
    its memory one URI."""
    uri = f"{URL}?prefix={prefixes.new()}&max_entries=100&max_bytes=100000&feed_length=50"
    cache_store = tl.open_store(uri)
    transcripts = tl.open_transcript_store(uri)
    try:
        transcripts.append("t", "s", [tl.Turn("t0", 0, "user", "hello", 1.0)])
        assert transcripts.count("t", "s") == 1
        assert "max_entries" not in transcripts.uri
    finally:
        cache_store.close()
        transcripts.close()
