"""LlamaIndex components serialize their stores by URI, never with a password: CachedLLM and
TokenleanMemory round-trip through to_dict/from_dict on memory, SQLite and Redis stores, a masked
password or a custom store is asked for by a clear error, never silently dropped."""

from __future__ import annotations

import doctest
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import MockLLM
from llama_index.llms.tokenlean import CachedLLM
from llama_index.llms.tokenlean import store_uri as store_uri_module
from llama_index.llms.tokenlean.store_uri import (
    MASK,
    cache_store_uri,
    has_masked_credentials,
    mask_credentials,
    transcript_store_uri,
)
from llama_index.memory.tokenlean import TokenleanMemory

import tokenlean as tl
from tests.redis_server import URL, Prefixes, prefixes
from tokenlean.testing import HashingEmbedder

__all__ = ["prefixes"]  # the fixture, imported for pytest

SECRET = "S3cretPW"


def _with_password(url: str, password: str = SECRET) -> str:
    """The test server's URL with a user and password (a server without ACLs accepts any)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://default:{password}@{rest}"


def _assert_no_secret(component: Any, data: dict[str, Any]) -> None:
    for text in (json.dumps(data), component.to_json(), repr(component), str(component)):
        assert SECRET not in text


def _exact_hit(llm: CachedLLM, prompt: str) -> bool:
    marker = llm.complete(prompt).additional_kwargs.get("tokenlean_cache")
    return bool(marker) and marker["layer"] == "exact"


def _memory(store: Any, session: str = "s") -> TokenleanMemory:
    memory = TokenleanMemory(
        tl.ConversationMemory(store=store, embedder=HashingEmbedder(64)),
        session=session,
        token_limit=500,
    )
    memory.put(ChatMessage(role="user", content="My order 1234 went to Paris."))
    memory.put(ChatMessage(role="assistant", content="Noted."))
    return memory


def _contents(memory: TokenleanMemory) -> list[str | None]:
    return [m.content for m in memory.get_all()]


class Wrapped:
    """A custom store: delegates to a built-in one, so nothing can describe it by URI."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ------------------------------------------------------------------ masking


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        (
            "redis://default:S3cretPW@h:6379/9?prefix=app:",
            "redis://default:***@h:6379/9?prefix=app:",
        ),
        ("redis://:S3cretPW@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0?password=S3cretPW&prefix=a:", "redis://h:6379/0?password=***&prefix=a:"),
        ("redis://h:6379/0?prefix=a:", "redis://h:6379/0?prefix=a:"),
        ("sqlite:////tmp/cache.db", "sqlite:////tmp/cache.db"),
    ],
)
def test_a_password_is_masked_and_the_rest_of_the_uri_kept(uri: str, masked: str) -> None:
    """mask_credentials replaces a password (user part or option) by ***, nothing else."""
    assert mask_credentials(uri) == masked
    assert has_masked_credentials(masked) == (masked != uri)


def test_a_tls_redis_store_is_described_with_its_scheme_user_and_options() -> None:
    """A rediss:// transcript store keeps TLS, its user and redis-py options; its password is
    masked (no connection is needed to describe it)."""
    store = tl.RedisTranscriptStore(
        f"rediss://app:{SECRET}@127.0.0.1:6390/2?ssl_cert_reqs=none", prefix="p:"
    )
    described = transcript_store_uri(store)
    assert described is not None
    assert described.startswith(f"rediss://app:{MASK}@127.0.0.1:6390/2?prefix=p:")
    assert "ssl_cert_reqs=none" in described
    assert SECRET not in described
    store.close()


def test_a_built_in_store_is_described_by_its_own_uri(tmp_path: Path) -> None:
    """The description of a built-in store is the core's ``uri`` (password masked there)."""
    sqlite = tl.SQLiteStore(tmp_path / "c.db", max_entries=3)
    redis = tl.RedisStore(f"redis://app:{SECRET}@127.0.0.1:1/0", prefix="p:")
    for store in (tl.MemoryStore(max_bytes=10), sqlite, redis):
        assert cache_store_uri(store) == store.uri
    transcripts = tl.RedisTranscriptStore(f"redis://app:{SECRET}@127.0.0.1:1/0", prefix="p:")
    assert transcript_store_uri(transcripts) == transcripts.uri
    assert SECRET not in str(transcripts.uri)
    for opened in (sqlite, redis, transcripts):
        opened.close()


def test_a_subclass_of_a_built_in_store_is_not_described() -> None:
    """A subclass of a built-in store (which may keep its data elsewhere) has no description,
    like any custom store, even though it inherits ``uri``."""

    class Subclass(tl.MemoryStore):
        pass

    class TranscriptSubclass(tl.MemoryTranscriptStore):
        pass

    assert cache_store_uri(Subclass()) is None
    assert transcript_store_uri(TranscriptSubclass()) is None


# ------------------------------------------------------------------ CachedLLM


def test_cached_llm_round_trips_a_memory_store_with_its_bounds() -> None:
    """A memory:// cache is described with its bounds; from_dict builds a fresh one like it."""
    llm = CachedLLM(MockLLM(max_tokens=3), "memory://?max_entries=100&max_bytes=5000")
    data = llm.to_dict()
    assert data["tokenlean_cache"]["store"] == {
        "kind": "memory",
        "uri": "memory://?max_entries=100&max_bytes=5000",
    }
    again = CachedLLM.from_dict(json.loads(json.dumps(data)))
    store = again.cache.store_backend
    assert isinstance(store, tl.MemoryStore)
    assert (store.max_entries, store.max_bytes) == (100, 5000)


def test_cached_llm_round_trips_a_sqlite_store_and_its_entries(tmp_path: Path) -> None:
    """A SQLite cache is described by its absolute path: the rebuilt LLM hits what was cached."""
    llm = CachedLLM(MockLLM(max_tokens=3), tl.CompletionCache(store=f"sqlite:///{tmp_path}/c.db"))
    llm.complete("Summarize the refund policy.")
    data = llm.to_dict()
    assert data["tokenlean_cache"]["store"]["uri"] == f"sqlite:///{tmp_path / 'c.db'}"
    llm.cache.close()
    again = CachedLLM.from_dict(data)
    assert _exact_hit(again, "Summarize the refund policy.")
    again.cache.close()


def test_cached_llm_round_trips_a_redis_store_and_its_entries(prefixes: Prefixes) -> None:
    """A RedisStore is described by its server, prefix and bounds (as a URI string or inside a
    CompletionCache): the rebuilt LLM shares the entries."""
    prefix = prefixes.new()
    uri = f"{URL}?prefix={prefix}&max_entries=50"
    for cache in (uri, tl.CompletionCache(store=uri)):
        llm = CachedLLM(MockLLM(max_tokens=3), cache, tenant="acme")
        llm.complete("Where is the warehouse?")
        data = llm.to_dict()
        described = data["tokenlean_cache"]["store"]["uri"]
        assert described.startswith(f"{URL}?prefix={prefix}&max_entries=50")
        again = CachedLLM.from_dict(json.loads(llm.to_json()))
        store = again.cache.store_backend
        assert isinstance(store, tl.RedisStore)
        assert (store.prefix, store.max_entries) == (prefix, 50)
        assert _exact_hit(again, "Where is the warehouse?")
        llm.cache.close()
        again.cache.close()


def test_cached_llm_never_writes_a_redis_password(prefixes: Prefixes) -> None:
    """The password is masked in to_dict and to_json; from_dict refuses the masked URI and
    says to pass cache=; with cache= (the URI with its password) the policy is kept and the
    entries are shared."""
    prefix = prefixes.new()
    secret_uri = f"{_with_password(URL)}?prefix={prefix}"
    policy = tl.CachePolicy.exact(ttl_s=3600)
    llm = CachedLLM(MockLLM(max_tokens=3), tl.CompletionCache(store=secret_uri, policy=policy))
    llm.complete("Where is the warehouse?")
    data = llm.to_dict()
    _assert_no_secret(llm, data)
    assert f"default:{MASK}@" in data["tokenlean_cache"]["store"]["uri"]
    with pytest.raises(tl.ConfigurationError, match=r"without its password.*cache="):
        CachedLLM.from_dict(data)
    again = CachedLLM.from_dict(data, cache=secret_uri)
    assert again.cache.policy == policy
    assert _exact_hit(again, "Where is the warehouse?")
    llm.cache.close()
    again.cache.close()


def test_cached_llm_asks_for_a_custom_store_instead_of_dropping_it() -> None:
    """A custom store is recorded by its type; from_dict without cache= raises, with cache=
    it uses the given cache."""
    custom = tl.CompletionCache(store=Wrapped(tl.MemoryStore()))
    llm = CachedLLM(MockLLM(max_tokens=3), custom)
    data = llm.to_dict()
    assert data["tokenlean_cache"]["store"] == {"kind": "custom", "type": f"{__name__}.Wrapped"}
    with pytest.raises(tl.ConfigurationError, match=r"Wrapped store is not serialized.*cache="):
        CachedLLM.from_dict(data)
    assert CachedLLM.from_dict(data, cache=custom).cache is custom


def test_cached_llm_reads_data_written_before_store_uris(tmp_path: Path) -> None:
    """Data holding the older {"kind": "sqlite", "path": ...} location still loads."""
    llm = CachedLLM(MockLLM(max_tokens=3), tl.CompletionCache(store=f"sqlite:///{tmp_path}/c.db"))
    data = llm.to_dict()
    llm.cache.close()
    data["tokenlean_cache"]["store"] = {"kind": "sqlite", "path": str(tmp_path / "c.db")}
    again = CachedLLM.from_dict(data)
    store = again.cache.store_backend
    assert isinstance(store, tl.SQLiteStore)
    assert store.path == tmp_path / "c.db"
    again.cache.close()


# ------------------------------------------------------------------ TokenleanMemory


def test_memory_round_trips_an_in_process_transcript_as_memory_uri() -> None:
    """An in-process transcript is described as memory://: the settings come back and the
    rebuilt memory starts empty (its turns lived in the first process)."""
    memory = TokenleanMemory(session="s1", tenant="acme", token_limit=700, system="Be brief.")
    data = memory.to_dict()
    assert data["store"] == "memory://"
    again = TokenleanMemory.from_dict(json.loads(json.dumps(data)))
    assert (again.session, again.tenant, again.token_limit, again.system) == (
        "s1",
        "acme",
        700,
        "Be brief.",
    )
    assert isinstance(again.memory.store, tl.MemoryTranscriptStore)


@pytest.mark.parametrize("given", ["store object", "store= URI"])
def test_memory_round_trips_a_sqlite_transcript_with_its_turns(tmp_path: Path, given: str) -> None:
    """A SQLite transcript (a ConversationMemory's store, or store=) is described by its
    absolute path: the rebuilt memory has the turns."""
    path = tmp_path / "memory.db"
    if given == "store object":
        memory = _memory(tl.SQLiteTranscriptStore(path))
    else:
        memory = TokenleanMemory(session="s", store=f"sqlite:///{path}")
        memory.memory._embedder = HashingEmbedder(64)  # no model download in tests
        memory.put(ChatMessage(role="user", content="My order 1234 went to Paris."))
        memory.put(ChatMessage(role="assistant", content="Noted."))
    data = memory.to_dict()
    assert data["store"] == f"sqlite:///{path}"
    again = TokenleanMemory.from_dict(data)
    assert _contents(again) == ["My order 1234 went to Paris.", "Noted."]


def test_memory_round_trips_a_redis_transcript_with_its_turns(prefixes: Prefixes) -> None:
    """A ConversationMemory on a Redis transcript store is described by its server and prefix:
    the rebuilt memory has the turns (before, it came back empty)."""
    prefix = prefixes.new()
    memory = _memory(tl.open_transcript_store(f"{URL}?prefix={prefix}"))
    data = memory.to_dict()
    assert data["store"].startswith(f"{URL}?prefix={prefix}")
    again = TokenleanMemory.from_dict(json.loads(memory.to_json()))
    assert isinstance(again.memory.store, tl.RedisTranscriptStore)
    assert _contents(again) == ["My order 1234 went to Paris.", "Noted."]


def test_memory_never_writes_a_redis_password(prefixes: Prefixes) -> None:
    """With a password in the store URI, to_dict, to_json and repr mask it; from_dict refuses
    the masked URI and says how to give it back; with store= (or memory=) the turns are back."""
    prefix = prefixes.new()
    secret_uri = f"{_with_password(URL)}?prefix={prefix}"
    memory = TokenleanMemory(session="s", store=secret_uri, token_limit=500)
    memory.memory._embedder = HashingEmbedder(64)
    memory.put(ChatMessage(role="user", content="My order 1234 went to Paris."))
    data = memory.to_dict()
    _assert_no_secret(memory, data)
    assert f"default:{MASK}@" in data["store"]
    with pytest.raises(tl.ConfigurationError, match=r"without its password.*store="):
        TokenleanMemory.from_dict(data)
    again = TokenleanMemory.from_dict(data, store=secret_uri)
    assert _contents(again) == ["My order 1234 went to Paris."]
    store = tl.open_transcript_store(secret_uri)
    given = TokenleanMemory.from_dict(data, memory=tl.ConversationMemory(store))
    assert _contents(given) == ["My order 1234 went to Paris."]


def test_memory_asks_for_a_custom_transcript_store_instead_of_dropping_it() -> None:
    """A custom transcript store is recorded by its type; from_dict without memory= raises,
    with memory= it uses the given memory."""
    memory = _memory(Wrapped(tl.MemoryTranscriptStore()))
    data = memory.to_dict()
    assert data["store"] is None
    assert data["custom_store"] == f"{__name__}.Wrapped"
    with pytest.raises(tl.ConfigurationError, match=r"Wrapped transcript store.*memory="):
        TokenleanMemory.from_dict(data)
    again = TokenleanMemory.from_dict(data, memory=memory.memory)
    assert _contents(again) == ["My order 1234 went to Paris.", "Noted."]


def test_memory_keeps_store_path_data_as_before(tmp_path: Path) -> None:
    """A memory built with store_path serializes store_path, as before (store stays None)."""
    path = str(tmp_path / "memory.db")
    memory = TokenleanMemory(session="p", store_path=path)
    data = memory.to_dict()
    assert (data["store_path"], data["store"]) == (path, None)
    assert "custom_store" not in data


# ------------------------------------------------------------------ docs


def test_the_store_uri_examples_hold() -> None:
    """The >>> examples of the adapter's serialization code produce what they show."""
    from llama_index.llms.tokenlean import base as llm_base
    from llama_index.memory.tokenlean import base as memory_base

    modules: Sequence[Any] = (store_uri_module, llm_base, memory_base)
    for module in modules:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__
