"""A framework's embedding model works wherever tokenlean takes an embedder."""

from __future__ import annotations

from typing import Any

import pytest

from tokenlean import (
    CachePolicy,
    CacheRequest,
    CompletionCache,
    ConfigurationError,
    EmbeddingError,
    HybridIndex,
    as_embedder,
    last_user_turn,
)


def langchain_embeddings() -> Any:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    return DeterministicFakeEmbedding(size=48)


def llamaindex_embeddings() -> Any:
    from llama_index.core.embeddings import MockEmbedding

    return MockEmbedding(embed_dim=48)


FRAMEWORKS = {"langchain": langchain_embeddings, "llamaindex": llamaindex_embeddings}


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_a_framework_embedder_is_unit_normalized_with_a_known_dimension(name: str) -> None:
    embedder = as_embedder(FRAMEWORKS[name]())
    vectors = embedder.embed(["refunds take five days", "parcels ship from Lyon"])
    assert vectors.shape == (2, 48)
    assert embedder.dimension == 48
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5 or float(abs(vectors[0]).sum()) == 0


@pytest.mark.parametrize("name", sorted(FRAMEWORKS))
def test_a_semantic_cache_and_a_hybrid_index_take_a_framework_embedder(name: str) -> None:
    cache = CompletionCache(
        policy=CachePolicy.semantic(threshold=0.99, compare=last_user_turn),
        embedder=FRAMEWORKS[name](),
    )
    request = CacheRequest(model="m", messages=({"role": "user", "content": "Where is Lyon?"},))
    cache.store(request, "In France.")
    assert cache.lookup(request).value == "In France."
    index = HybridIndex(embedder=FRAMEWORKS[name]())
    index.add([{"id": "d1", "text": "Refunds take five days."}])
    assert len(index) >= 1


def test_what_is_not_an_embedder_is_refused_and_a_failing_one_is_typed() -> None:
    with pytest.raises(ConfigurationError, match="not an embedder"):
        as_embedder(object())

    class Broken:
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("the embedding service is down")

    with pytest.raises(EmbeddingError, match="service is down"):
        as_embedder(Broken()).embed(["x"])
