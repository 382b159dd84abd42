"""Incremental BM25 (issue 17): appends cost about the new texts and score as a full rebuild."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tokenlean._retrieval.hybrid_index import HybridIndex
from tokenlean._retrieval.lexical import BM25Index, IncrementalBM25
from tokenlean._retrieval.search import HybridSearcher
from tokenlean.testing import HashingEmbedder

WORDS = ["refund", "refunds", "refunded", "shipping", "ships", "parcel", "parcels", "order",
         "orders", "the", "and", "of", "to", "running", "runs", "ran", "card", "battery",
         "warranty", "lyon", "tracking", "five", "days", "two"]  # fmt: skip
QUERIES = ["refund", "shipping parcels", "running runs", "the and", "card card battery",
           "nothing matches zzz", ""]  # fmt: skip


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 14)))


def _assert_same(index: IncrementalBM25, texts: list[str]) -> None:
    reference = BM25Index(texts)
    assert index.size == len(texts)
    for query in QUERIES:
        got, want = index.scores(query), reference.scores(query)
        assert got.shape == want.shape == (len(texts),)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=query)


@pytest.mark.parametrize("seed", range(8))
def test_insertions_score_as_a_full_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    texts = [_text(rng) for _ in range(rng.randint(1, 60))]
    index = IncrementalBM25(texts)
    _assert_same(index, texts)
    for _ in range(25):  # enough to fold the tail into the bulk several times
        count = rng.randint(1, 4)
        positions = sorted(rng.randint(0, len(texts)) for _ in range(count))
        new = [_text(rng) for _ in range(count)]
        index = index.inserted(positions, new)
        texts = list(np.insert(np.array(texts, dtype=object), positions, np.array(new, object)))
        _assert_same(index, texts)


def test_an_index_is_not_changed_by_insertions_made_from_it() -> None:
    texts = ["refunds take five days", "shipping takes two days", "the card is credited"]
    base = IncrementalBM25(texts)
    before = base.scores("refund days")
    first = base.inserted([0], ["refund refund"])
    second = base.inserted([3], ["two refunds"])  # from the same index again
    third = first.inserted([4], ["refund days"])
    np.testing.assert_array_equal(base.scores("refund days"), before)
    _assert_same(first, ["refund refund", *texts])
    _assert_same(second, [*texts, "two refunds"])
    _assert_same(third, ["refund refund", *texts, "refund days"])


def test_an_empty_index_grows() -> None:
    index = IncrementalBM25([])
    assert index.scores("refund").shape == (0,)
    index = index.inserted([0, 0], ["refund", "the"])
    _assert_same(index, ["refund", "the"])


def _docs(rng: random.Random, ids: list[str]) -> list[dict[str, str]]:
    return [{"id": doc_id, "text": f"{_text(rng)}. {_text(rng)}."} for doc_id in ids]


def _same_as_fresh(index: HybridIndex) -> None:
    fresh = HybridIndex(embedder=HashingEmbedder(64))
    fresh.add([index.get(doc_id) for doc_id in sorted(index._docs)])  # type: ignore[misc]
    built, want = index.built(), fresh.built()
    assert [c.id for c in built.chunks] == [c.id for c in want.chunks]
    np.testing.assert_array_equal(built.vectors, want.vectors)
    for query in QUERIES:
        np.testing.assert_allclose(
            built.bm25.scores(query), want.bm25.scores(query), rtol=1e-5, atol=1e-6
        )
        got = HybridSearcher(index).search(query, k=5)
        expected = HybridSearcher(fresh).search(query, k=5)
        assert [r.chunk.id for r in got] == [r.chunk.id for r in expected]


def test_hybrid_index_merges_additions_and_rebuilds_after_deletions() -> None:
    rng = random.Random(7)
    index = HybridIndex(embedder=HashingEmbedder(64))
    index.add(_docs(rng, [f"d{i}" for i in range(40)]))
    _same_as_fresh(index)
    next_id = 40
    for step in range(30):
        action = rng.random()
        if action < 0.7:  # new documents, ids sorting anywhere among the old ones
            ids = [f"d{next_id + i}" for i in range(rng.randint(1, 3))]
            next_id += len(ids)
            index.add(_docs(rng, ids))
        elif action < 0.85:  # a replacement
            index.add(_docs(rng, [f"d{rng.randrange(next_id)}"]))
        else:
            index.delete([f"d{rng.randrange(next_id)}"])
        if step % 3 == 0:
            _same_as_fresh(index)
    _same_as_fresh(index)


def test_new_documents_are_merged_without_a_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenlean._retrieval.hybrid_index as hybrid_index

    rng = random.Random(3)
    index = HybridIndex(embedder=HashingEmbedder(64))
    index.add(_docs(rng, [f"d{i}" for i in range(20)]))
    index.built()
    rebuilds: list[int] = []

    def counting(texts: list[str]) -> IncrementalBM25:
        rebuilds.append(len(texts))
        return IncrementalBM25(texts)

    monkeypatch.setattr(hybrid_index, "IncrementalBM25", counting)
    index.add(_docs(rng, ["d20", "d3a"]))
    assert len(index.built().chunks) == index.chunk_count
    assert rebuilds == []
    index.add(_docs(rng, ["d5"]))  # a replacement rebuilds
    index.built()
    assert rebuilds == [index.chunk_count]
    _same_as_fresh(index)
