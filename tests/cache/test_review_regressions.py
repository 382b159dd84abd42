"""Regressions found in review: agent steps, images, races, tombstones, embedder changes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

import tokenlean as tl
from tokenlean._cache.vector_index import VectorIndex
from tokenlean.testing import FakeClock, HashingEmbedder


def body(messages: list[dict[str, Any]]) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai({"model": "gpt-4o-mini", "messages": messages})


def semantic(**options: Any) -> tl.CompletionCache:
    policy = tl.CachePolicy.semantic(threshold=0.7, compare=tl.last_user_turn, **options)
    return tl.CompletionCache(policy=policy, embedder=HashingEmbedder())


def test_an_agent_step_after_a_tool_result_is_not_answered_with_the_tool_call() -> None:
    """[sys, user] and [sys, user, assistant tool call, tool result] never share an answer."""
    cache = semantic()
    first = [
        {"role": "system", "content": "agent"},
        {"role": "user", "content": "weather in Paris"},
    ]
    cache.store(body(first), {"tool_calls": [{"name": "weather"}]})
    follow_up = [
        *first,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
         "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"},
    ]  # fmt: skip
    assert cache.lookup(body(follow_up)).hit is False


def test_questions_about_different_images_do_not_share_an_answer() -> None:
    """Image parts are part of the exact key and keep a request out of the semantic layer."""
    cache = semantic()

    def ask(url: str) -> tl.CacheRequest:
        content = [{"type": "text", "text": "what is in this picture"},
                   {"type": "image_url", "image_url": {"url": url}}]  # fmt: skip
        return body([{"role": "user", "content": content}])

    cache.store(ask("https://example.invalid/cat.png"), "a cat")
    assert cache.lookup(ask("https://example.invalid/cat.png")).value == "a cat"
    assert cache.lookup(ask("https://example.invalid/dog.png")).hit is False


def test_an_expiry_never_deletes_an_entry_stored_meanwhile() -> None:
    """If a fresh entry replaced an expired one between read and delete, the fresh one stays."""
    clock = FakeClock()

    class StaleReads(tl.MemoryStore):
        stale: tl.StoredEntry | None = None

        def get(self, namespace: str, key: str) -> tl.StoredEntry | None:
            if self.stale is not None:
                entry, self.stale = self.stale, None
                return entry
            return super().get(namespace, key)

    store = StaleReads()
    cache = tl.CompletionCache(store, policy=tl.CachePolicy.exact(ttl_s=10), clock=clock)
    request = body([{"role": "user", "content": "hi"}])
    cache.store(request, "old")
    store.stale = next(store.scan())
    clock.advance(11)
    cache.store(request, "new")  # a concurrent writer refreshed the entry
    cache.lookup(request)  # reads the stale, expired copy
    assert cache.lookup(request).value == "new"


def test_re_adding_a_key_many_times_keeps_it_findable() -> None:
    """Tombstones from replacing a key never hide its live vector."""
    index = VectorIndex(8)
    vector = np.ones(8, dtype=np.float32) / np.sqrt(8)
    for _ in range(40):
        index.add("k", vector)
    assert index.search(vector, 1) == [("k", index.search(vector, 1)[0][1])]
    assert len(index) == 1


def test_a_store_reopened_with_another_embedder_misses_instead_of_crashing(tmp_path: Path) -> None:
    """Entries embedded by one model are never compared with another model's vectors."""
    path = tmp_path / "c.db"
    request = body([{"role": "user", "content": "how do I reset my password"}])
    static = tl.CachePolicy.semantic(threshold=0.7, compare=tl.last_user_turn)
    first = tl.CompletionCache(tl.SQLiteStore(path), policy=static,
                               embedder=HashingEmbedder(64))  # fmt: skip
    first.store(request, "A")
    first.close()
    second = tl.CompletionCache(tl.SQLiteStore(path), policy=static,
                                embedder=HashingEmbedder(128))  # fmt: skip
    paraphrase = body([{"role": "user", "content": "how can I reset my password"}])
    assert second.lookup(paraphrase).hit is False
    assert second.store(paraphrase, "B") is True
    assert second.lookup(paraphrase).value == "B"


def test_many_openers_create_a_new_store_file_safely(tmp_path: Path) -> None:
    """Eight connections opening one new file at once all succeed, with one secret."""
    path = tmp_path / "new.db"
    stores: list[tl.SQLiteStore] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            stores.append(tl.SQLiteStore(path))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({store.secret for store in stores}) == 1


def test_a_single_tag_string_is_one_tag() -> None:
    """tags='billing' means the tag 'billing', not seven one-letter tags."""
    cache = tl.CompletionCache()
    cache.store(body([{"role": "user", "content": "hi"}]), "A", tags="billing")  # type: ignore[arg-type]
    assert cache.invalidate(tag="b") == 0
    assert cache.invalidate(tag="billing") == 1


def test_retrieval_cache_refuses_a_string_ranking() -> None:
    """A ranking must be a list; a bare string is a clear error."""
    import pytest

    with pytest.raises(tl.InvalidInputError):
        tl.RetrievalCache().put("q", "doc-1", index_version="v1")


def test_the_vector_index_finds_the_nearest_live_key_through_adds_and_removals() -> None:
    """After many adds, removals and re-adds, search returns the brute-force nearest live key."""
    from tokenlean._cache.vector_index import VectorIndex

    rng = np.random.default_rng(0)
    index = VectorIndex(16, hnsw_threshold=10**9)
    vectors: dict[str, np.ndarray] = {}
    for step in range(600):
        key = f"k{rng.integers(0, 250)}"
        if step % 3 == 2 and key in vectors:
            index.remove(key)
            del vectors[key]
        else:
            vector = rng.normal(size=16).astype(np.float32)
            vectors[key] = vector / np.linalg.norm(vector)
            index.add(key, vectors[key])
    assert len(index) == len(vectors)
    keys = list(vectors)
    matrix = np.stack([vectors[k] for k in keys])
    for _ in range(50):
        query = rng.normal(size=16).astype(np.float32)
        query /= np.linalg.norm(query)
        found = index.search(query, 1)
        assert found[0][0] == keys[int(np.argmax(matrix @ query))]
