"""Budgeted retrieval: chunking, the hybrid index, search, packing under a hard budget."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenlean as tl
from tokenlean.testing import HashingEmbedder

COUNT = tl.get_token_counter()
DOCS = [
    {"id": "refunds", "text": "Refunds are paid within five days. The card used is credited.",
     "metadata": {"lang": "en", "team": "billing"}},
    {"id": "shipping", "text": "Parcels ship from Lyon every morning. Tracking starts at noon.",
     "metadata": {"lang": "en", "team": "logistics"}},
    {"id": "retours", "text": "Les remboursements sont versés sous cinq jours.",
     "metadata": {"lang": "fr", "team": "billing"}},
    {"id": "warranty", "text": "The warranty covers batteries for two years. Water damage is "
     "not covered.", "metadata": {"lang": "en", "team": "support"}},
]  # fmt: skip


class CountingEmbedder(HashingEmbedder):
    """A fake embedder that counts the texts it embeds."""

    def __init__(self) -> None:
        super().__init__(64)
        self.embedded = 0

    def embed(self, texts: Any) -> Any:
        self.embedded += len(texts)
        return super().embed(texts)


def make_index(path: Path | None = None, embedder: Any = None) -> tl.HybridIndex:
    index = tl.HybridIndex(path, embedder=embedder or HashingEmbedder(64))
    index.add(DOCS)
    return index


# ------------------------------------------------------------------ chunking


def test_chunks_are_whole_sentences_under_the_limit() -> None:
    """No chunk exceeds max_tokens and none splits a sentence that fits."""
    text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(40))
    chunks = tl.SentenceSplitter(max_tokens=30).split(tl.Document("d", text))
    assert len(chunks) > 1
    for chunk in chunks:
        assert COUNT(chunk.text) <= 30
        assert chunk.text.endswith(".")
        assert text[chunk.start : chunk.end] == chunk.text
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_an_over_long_sentence_is_cut_at_words_and_overlap_repeats_sentences() -> None:
    """A sentence longer than the limit is cut; overlap=1 repeats the previous sentence."""
    long = "word " * 100 + "end."
    assert all(COUNT(c.text) <= 20 for c in tl.SentenceSplitter(20).split(tl.Document("d", long)))
    text = "One is here. Two is here. Three is here. Four is here."
    chunks = tl.SentenceSplitter(8, overlap=1).split(tl.Document("d", text))
    assert chunks[1].text.startswith(chunks[0].text.split(". ")[-1].rstrip("."))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["Word.", "Dr. Who went.", "Yes!", "e.g. this", "\n\n", " ",
                                 "Two words.", "ok?"]), max_size=30).map(" ".join))  # fmt: skip
def test_sentence_spans_cover_every_word_once(text: str) -> None:
    """Every non-space character is in exactly one sentence span, in order."""
    spans = list(tl.split_sentences(text))
    covered = "".join(text[a:b] for a, b in spans)
    assert covered.replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
    assert all(a < b for a, b in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


# ------------------------------------------------------------------ index


def test_add_update_delete_change_the_version() -> None:
    """Each change gets a new version; replacing a document replaces its chunks."""
    index = make_index()
    version = index.version
    index.add([{"id": "refunds", "text": "Refunds now take ten days."}])
    assert index.version != version
    assert index.get("refunds").text == "Refunds now take ten days."  # type: ignore[union-attr]
    assert len(index) == 4
    assert index.delete(["refunds", "missing"]) == 1
    assert len(index) == 3
    assert all(c.doc_id != "refunds" for c in index.built().chunks)


def test_invalid_documents_change_nothing() -> None:
    """A bad document in a batch raises InvalidInputError and leaves the index as it was."""
    index = make_index()
    version, count = index.version, index.chunk_count
    for bad in ([{"id": "x"}], [{"id": "", "text": "t"}], [{"id": "a", "text": 3}],
                [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]):  # fmt: skip
        with pytest.raises(tl.InvalidInputError):
            index.add(bad)
    assert (index.version, index.chunk_count) == (version, count)


def test_the_index_persists_and_reopens_without_re_embedding(tmp_path: Path) -> None:
    """A reopened index has the same chunks and answers, with no embedding done."""
    path = tmp_path / "index.db"
    index = make_index(path, embedder=HashingEmbedder(64))
    before = tl.HybridSearcher(index).search("when are refunds paid", k=2)
    index.close()
    embedder = CountingEmbedder()
    reopened = tl.HybridIndex(path, embedder=embedder)
    assert len(reopened) == 4
    after = tl.HybridSearcher(reopened).search("when are refunds paid", k=2)
    assert [r.chunk.id for r in after] == [r.chunk.id for r in before]
    assert embedder.embedded == 1  # only the query
    reopened.delete(["shipping"])
    reopened.close()
    assert len(tl.HybridIndex(path, embedder=HashingEmbedder(64))) == 3


def test_an_index_file_refuses_another_embedder_and_foreign_files(tmp_path: Path) -> None:
    """Different embedder settings, or someone else's database, are clear errors."""
    path = tmp_path / "index.db"
    make_index(path, embedder=HashingEmbedder(64)).close()
    with pytest.raises(tl.ConfigurationError, match="was built with embedder"):
        tl.HybridIndex(path, embedder=HashingEmbedder(32))
    foreign = tmp_path / "app.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(tl.ForeignStoreError):
        tl.HybridIndex(foreign, embedder=HashingEmbedder(64))
    cache_file = tmp_path / "cache.db"
    tl.SQLiteStore(cache_file).close()
    with pytest.raises(tl.ForeignStoreError, match="tokenlean-cache"):
        tl.HybridIndex(cache_file, embedder=HashingEmbedder(64))


# ------------------------------------------------------------------ search


def test_hybrid_search_finds_the_relevant_document() -> None:
    """The refund question ranks the refund document first, in every mode."""
    searcher = tl.HybridSearcher(make_index())
    for mode in ("hybrid", "lexical", "dense"):
        results = searcher.search("when are refunds paid", k=3, mode=mode)  # type: ignore[arg-type]
        assert results[0].chunk.doc_id == "refunds", mode
    weighted = tl.HybridSearcher(make_index(), fusion="weighted", alpha=0.3, reranker=None)
    assert weighted.search("refunds paid", k=1)[0].chunk.doc_id == "refunds"


def test_metadata_filters_restrict_results() -> None:
    """Filters match values or lists of values; nothing outside them is returned."""
    searcher = tl.HybridSearcher(make_index())
    results = searcher.search("refunds", k=10, filters={"lang": "fr"})
    assert {r.chunk.doc_id for r in results} == {"retours"}
    both = searcher.search("refunds paid", k=10, filters={"team": ["billing", "support"]})
    assert {r.chunk.doc_id for r in both} <= {"refunds", "retours", "warranty"}
    assert searcher.search("refunds", filters={"lang": "de"}) == []


def test_empty_index_empty_query_and_k_zero_return_nothing() -> None:
    """Degenerate inputs return an empty list, not an error."""
    empty = tl.HybridSearcher(tl.HybridIndex(embedder=HashingEmbedder(64)))
    assert empty.search("anything") == []
    searcher = tl.HybridSearcher(make_index())
    assert searcher.search("   ") == []
    assert searcher.search("refunds", k=0) == []


def test_near_duplicates_are_removed_and_mmr_diversifies() -> None:
    """Two copies of one text give one result; diversity spreads results across topics."""
    index = make_index()
    index.add([{"id": "refunds-copy", "text": DOCS[0]["text"]}])
    results = tl.HybridSearcher(index).search("refunds paid", k=5)
    ids = [r.chunk.doc_id for r in results]
    assert not {"refunds", "refunds-copy"} <= set(ids)
    diverse = tl.HybridSearcher(index, diversity=0.7).search("refunds paid card", k=3)
    assert len({r.chunk.doc_id for r in diverse}) == 3


# ------------------------------------------------------------------ packing


def test_packing_respects_the_budget_and_reports_drops() -> None:
    """The context fits the budget; what did not fit is reported with a reason."""
    retriever = tl.BudgetedRetriever(make_index())
    packed = retriever.retrieve("refunds paid within five days", budget=30)
    assert packed.tokens <= 30
    assert COUNT(packed.text) == packed.tokens
    assert packed.items
    assert packed.items[0].doc_id == "refunds"
    assert all(d.reason for d in packed.dropped)
    assert "[1] (source: refunds#0)" in packed.text


def test_a_chunk_that_does_not_fit_is_trimmed_to_its_relevant_sentences() -> None:
    """With room for one sentence, the sentence that matches the query is kept."""
    chunk = tl.Chunk("w#0", "w", 0, DOCS[3]["text"], 0, len(DOCS[3]["text"]))
    candidate = tl.ScoredChunk(chunk, 1.0, 1.0, 1.0)
    packed = tl.pack_chunks([candidate], budget=16, query="is water damage covered",
                            min_trim_tokens=5)  # fmt: skip
    assert packed.items[0].trimmed
    assert packed.items[0].text == "Water damage is not covered."


def test_k_caps_the_number_of_items_and_order_edges_puts_the_best_at_both_ends() -> None:
    """k limits items; 'edges' renders rank 1 first and rank 2 last."""
    chunks = [tl.ScoredChunk(tl.Chunk(f"d{i}#0", f"d{i}", 0, f"Text {i}.", 0, 7), 1 - i / 10,
                             0, 0) for i in range(5)]  # fmt: skip
    packed = tl.pack_chunks(chunks, budget=500, k=4, order="edges")
    assert [item.doc_id for item in packed.items] == ["d0", "d2", "d3", "d1"]
    assert [d.reason for d in packed.dropped] == ["beyond k=4"]
    with pytest.raises(tl.ConfigurationError):
        tl.pack_chunks(chunks, budget=-1)


pieces = st.sampled_from([*"abcdefgh ", ". ", "\n", "é", "42", "Word. ", "longerword"])
words = st.lists(pieces, max_size=120).map("".join)


@settings(max_examples=120, deadline=None)
@given(st.lists(words, min_size=1, max_size=12), st.integers(min_value=0, max_value=400),
       st.sampled_from(["edges", "score", "document"]), st.booleans())  # fmt: skip
def test_the_budget_is_never_exceeded(
    texts: list[str], budget: int, order: Any, trim: bool
) -> None:
    """Over random documents and budgets, the rendered context never exceeds the budget."""
    candidates = [
        tl.ScoredChunk(tl.Chunk(f"d{i}#0", f"d{i}", 0, text, 0, len(text)), 1.0 / (i + 1), 0, 0)
        for i, text in enumerate(texts)
    ]
    packed = tl.pack_chunks(candidates, budget, query="abc def", order=order, trim=trim)
    assert COUNT(packed.text) <= budget
    assert packed.tokens == (COUNT(packed.text) if packed.items else 0)
    assert len(packed.items) + len(packed.dropped) == len(candidates)


def test_huge_documents_and_queries_are_handled() -> None:
    """A 100,000-word document is chunked and searchable; a huge query still answers."""
    index = tl.HybridIndex(embedder=HashingEmbedder(64))
    huge = " ".join(f"Line {i} of the manual mentions part {i % 97}." for i in range(12_000))
    assert index.add([{"id": "manual", "text": huge}]) > 100
    retriever = tl.BudgetedRetriever(index)
    packed = retriever.retrieve("part 42 " * 2000, budget=200)
    assert 0 < packed.tokens <= 200


# ------------------------------------------------------------------ retriever and cache


def test_the_retrieval_cache_skips_search_until_the_index_changes() -> None:
    """A repeated query is served from the cache; a change to the index invalidates it."""
    index = make_index()
    searcher = tl.HybridSearcher(index)
    calls = 0
    original = searcher.search

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    searcher.search = counted  # type: ignore[method-assign]
    retriever = tl.BudgetedRetriever(index, searcher=searcher, cache=tl.RetrievalCache())
    first = retriever.retrieve("when are refunds paid", budget=60)
    second = retriever.retrieve("When are   refunds paid", budget=60)
    assert first.text == second.text
    assert calls == 1
    index.add([{"id": "new", "text": "Refunds for gift cards are not possible."}])
    retriever.retrieve("when are refunds paid", budget=60)
    assert calls == 2


def test_async_retrieve_matches_sync() -> None:
    """aretrieve returns what retrieve does."""
    retriever = tl.BudgetedRetriever(make_index())
    sync = retriever.retrieve("warranty batteries", budget=50)
    assert asyncio.run(retriever.aretrieve("warranty batteries", budget=50)).text == sync.text


def test_with_the_real_embedding_model() -> None:
    """With all-MiniLM-L6-v2, a paraphrased question finds the right document."""
    pytest.importorskip("sentence_transformers")
    index = tl.HybridIndex()
    index.add(DOCS)
    packed = tl.BudgetedRetriever(index).retrieve("How long until I get my money back?", budget=40)
    assert packed.doc_ids[0] == "refunds"
    assert isinstance(np.float32(0), np.floating)


def test_a_second_search_with_the_same_vector_sees_what_was_added_in_between() -> None:
    """The searcher reuses its last dense scores only for the same index state and vector."""
    embedder = HashingEmbedder()
    index = tl.HybridIndex(embedder=embedder)
    index.add([{"id": f"d{i}", "text": f"parcel {i} leaves on day {i}"} for i in range(20)])
    searcher = tl.HybridSearcher(index)
    vector = embedder.embed(["refund for my parcel"])[0]
    first = searcher.search("refund parcel", k=5, query_vector=vector)
    again = searcher.search("refund parcel days", k=5, query_vector=vector)
    fresh = tl.HybridSearcher(index).search("refund parcel days", k=5, query_vector=vector)
    assert [r.chunk.id for r in again] == [r.chunk.id for r in fresh]
    assert [r.score for r in again] == [r.score for r in fresh]
    index.add([{"id": "refund", "text": "the refund for my parcel is paid"}])
    after = searcher.search("refund parcel", k=5, query_vector=vector)
    assert after[0].chunk.doc_id == "refund"
    assert [r.chunk.id for r in first] != [r.chunk.id for r in after]


def test_a_lexical_search_embeds_nothing() -> None:
    class Refusing(HashingEmbedder):
        refuse = False

        def embed(self, texts: Any) -> Any:
            if self.refuse:
                raise AssertionError("a lexical search embedded the query")
            return super().embed(texts)

    embedder = Refusing()
    index = tl.HybridIndex(embedder=embedder)
    index.add([{"id": "r", "text": "refunds take five days"}, {"id": "s", "text": "ships in two"}])
    embedder.refuse = True
    hits = tl.HybridSearcher(index).search("refunds", mode="lexical")
    assert [h.chunk.doc_id for h in hits] == ["r"]
    assert hits[0].dense == 0.0
