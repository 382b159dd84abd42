"""ConversationMemory takes the reranker of its older-turn retrieval: a stronger relevance model
(a cross-encoder on the user's own weights) ranks the evidence, the offline default stays the
default, and one that fails costs the pack its retrieved turns, not the call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import HashingEmbedder

NEEDLE = "The spare key is under the blue flowerpot."


def _conversation() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(40):
        out.append({"role": "user", "content": f"Where is parcel {i}? It was for Lyon."})
        out.append({"role": "assistant", "content": f"Parcel {i} leaves the depot on day {i}."})
        if i == 5:
            out.append({"role": "user", "content": NEEDLE})
            out.append({"role": "assistant", "content": "Noted."})
    return out


class _Oracle:
    """Scores the one turn a lexical-dense ranking cannot find (no word shared with the
    question) first, as a relevance model that understands the question would."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def rerank(self, query: str, candidates: Sequence[tl.ScoredChunk]) -> list[float]:
        self.queries.append(query)
        return [1.0 if "flowerpot" in c.chunk.text else 0.0 for c in candidates]


class _Broken:
    def rerank(self, query: str, candidates: Sequence[tl.ScoredChunk]) -> list[float]:
        raise RuntimeError("model server down")


QUESTION = "How do I get in if I am locked out?"


def _needle_id(memory: tl.ConversationMemory) -> str:
    return next(t.id for t in memory.turns("s") if t.content == NEEDLE)


def test_the_memory_ranks_older_turns_with_the_given_reranker() -> None:
    plain = tl.ConversationMemory(embedder=HashingEmbedder(64))
    oracle = _Oracle()
    ranked = tl.ConversationMemory(embedder=HashingEmbedder(64), reranker=oracle)
    for memory in (plain, ranked):
        memory.add("s", _conversation())
    assert _needle_id(plain) not in plain.context("s", budget=250, user=QUESTION).sources()
    pack = ranked.context("s", budget=250, user=QUESTION)
    assert _needle_id(ranked) in pack.sources()
    assert pack.tokens <= 250
    assert oracle.queries
    assert oracle.queries[0] == QUESTION


def test_no_reranker_keeps_the_fusion_order() -> None:
    memory = tl.ConversationMemory(embedder=HashingEmbedder(64), reranker=None)
    memory.add("s", _conversation())
    pack = memory.context("s", budget=250, user="Where is parcel 3?")
    assert pack.degraded == ()
    assert "retrieved" in pack.section_tokens()


def test_a_failing_reranker_leaves_the_retrieved_turns_out_not_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = tl.ConversationMemory(embedder=HashingEmbedder(64), reranker=_Broken())
    memory.add("s", _conversation())
    with caplog.at_level("WARNING", logger="tokenlean.memory"):
        pack = memory.context("s", budget=250, user=QUESTION)
    assert pack.degraded == ("retrieved",)
    assert pack.index_error == "RuntimeError: model server down"
    assert "retrieved" not in pack.section_tokens()
    assert pack.tokens <= 250
    assert memory.count("s") == len(_conversation())


def test_a_reranker_without_rerank_is_refused() -> None:
    with pytest.raises(tl.ConfigurationError, match="reranker must be"):
        tl.ConversationMemory(embedder=HashingEmbedder(64), reranker="cross-encoder")  # type: ignore[arg-type]
    with pytest.raises(tl.ConfigurationError, match="reranker must be"):
        tl.ConversationMemory(embedder=HashingEmbedder(64), reranker=object())  # type: ignore[arg-type]
