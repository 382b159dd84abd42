"""Stores chosen by URI: each scheme opens its backend with its options; anything else is a
configuration error naming the accepted forms."""

from __future__ import annotations

from pathlib import Path

import pytest

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes

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
