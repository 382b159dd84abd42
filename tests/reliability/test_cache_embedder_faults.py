"""The semantic cache fails open on its embedder too: an embedder that raises, or returns
vectors of the wrong shape, NaN or infinity, makes the lookup a counted miss and drops the
semantic write; nothing wrong is remembered, so the cache works again once the embedder does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import tokenlean as tl
from tokenlean.testing import HashingEmbedder


class Flaky:
    """A HashingEmbedder whose answers can be broken on demand."""

    def __init__(self) -> None:
        self.inner = HashingEmbedder(64)
        self.dimension = 64
        self.mode = "ok"

    def embed(self, texts: Sequence[str]) -> Any:
        if self.mode == "raise":
            raise ConnectionError("embedding service unavailable")
        vectors = self.inner.embed(texts)
        if self.mode == "short":
            return vectors[:, :10]
        if self.mode == "nan":
            return np.full_like(vectors, np.nan)
        if self.mode == "missing":
            return vectors[:0]
        return vectors


def req(text: str) -> tl.CacheRequest:
    return tl.CacheRequest.from_openai(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    )


@pytest.mark.parametrize("mode", ["raise", "short", "nan", "missing"])
def test_a_failing_embedder_is_a_counted_miss_then_the_cache_recovers(mode: str) -> None:
    embedder = Flaky()
    cache = tl.CompletionCache(
        embedder=embedder, policy=tl.CachePolicy.semantic(compare=tl.last_user_turn, threshold=0.5)
    )
    assert cache.store(req("where is my parcel"), "It left Lyon.")
    embedder.mode = mode
    missed = cache.lookup(req("where is my parcel now"))
    assert not missed.hit
    assert "the embedder failed" in missed.reason
    assert not cache.store(req("what is the refund policy"), "Fourteen days.")  # dropped
    assert cache.lookup(req("where is my parcel")).hit  # the exact layer still serves
    assert cache.stats().embedding_errors == 2
    embedder.mode = "ok"
    after = cache.lookup(req("where is my parcel now"))  # nothing wrong was remembered:
    assert after.similarity is not None  # it was compared with the stored question
    assert "embedder" not in after.reason
    assert cache.store(req("what is the refund policy"), "Fourteen days.")
    assert cache.stats().embedding_errors == 2


def test_a_batch_lookup_with_a_failing_embedder_is_counted_misses() -> None:
    embedder = Flaky()
    cache = tl.CompletionCache(
        embedder=embedder, policy=tl.CachePolicy.semantic(compare=tl.last_user_turn, threshold=0.5)
    )
    embedder.mode = "raise"
    found = cache.lookup_many([req("first question"), req("second question")])
    assert [f.hit for f in found] == [False, False]
    assert cache.stats().embedding_errors == 2


def test_the_default_judge_gives_no_verdict_when_the_embedder_fails() -> None:
    """A NaN or raising embedder is no evidence that two answers differ."""
    embedder = Flaky()
    judge = tl.DefaultAnswerJudge(embedder)
    for mode in ("nan", "raise", "missing"):
        embedder.mode = mode
        assert judge("Refunds are paid back quickly.", "You get your money back soon.") is None


def test_calibrate_raises_a_typed_error_when_the_embedder_fails() -> None:
    embedder = Flaky()
    cache = tl.CompletionCache(
        embedder=embedder, policy=tl.CachePolicy.semantic(compare=tl.last_user_turn)
    )
    embedder.mode = "raise"
    with pytest.raises(tl.EmbeddingError):
        cache.calibrate([("where is my parcel", "where's my package", True)])
