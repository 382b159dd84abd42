"""Retrieval of a session's older turns: what each turn is indexed as, and the ranking for a
user turn (hybrid search, then a second round of pseudo-relevance feedback)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from tokenlean._memory.assembly import said_text
from tokenlean._memory.summary import turn_label
from tokenlean._memory.transcript import Turn
from tokenlean._retrieval.documents import key_terms
from tokenlean._retrieval.search import HybridSearcher, Reranker, ScoredChunk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tokenlean._retrieval.hybrid_index import HybridIndex

__all__ = ["rank_older_turns", "second_round", "turn_documents"]

CANDIDATES = 60
"""Candidates taken from each side (BM25, embeddings) of each search."""
DEPTH = 80
"""Turns ranked per user turn (the budget holds fewer)."""

_SEARCHED = frozenset({"user", "assistant", "tool"})  # system turns are pinned, never retrieved


def turn_documents(
    turns: Iterable[Turn], replied_to: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The index documents of ``turns`` (user, assistant and tool turns that say something:
    text, an image's caption or tool calls), and the text the next turn replies to
    (``replied_to``: that of the turn before the first). A tool result is often the only turn
    that holds a fact an agent looked up, and a tool call's arguments are often what a later
    question names (the order number, the city).

    A turn is embedded as itself (its label and text) but searched lexically with the text of
    the turn it replies to (the turn before it) as well: a reply ("Yes, every summer!") often
    holds the answer while the question it answers holds the words a later question uses. The
    embedding stays the turn's own: a reply embedded with its question loses what it says
    itself."""
    documents: list[dict[str, Any]] = []
    for t in turns:
        said = said_text(t) if t.role in _SEARCHED else ""
        if not said:
            continue
        own = f"{turn_label(t)}: {said}"
        text = f"{own}\n{replied_to}" if replied_to else own
        documents.append({"id": t.id, "text": text, "embed": own, "metadata": {"index": t.index}})
        replied_to = said
    return documents, replied_to


def rank_older_turns(
    index: HybridIndex, query: str, *, reranker: Reranker | Literal["default"] | None = "default"
) -> list[ScoredChunk]:
    """The index's turns most relevant to ``query``, best first (at most :data:`DEPTH`): a
    hybrid search, then :func:`second_round`, both with the query's one embedding."""
    searcher = HybridSearcher(index, candidates=CANDIDATES, reranker=reranker)
    vector = searcher.embed_query(query) if query.strip() else None
    hits = searcher.search(query, k=DEPTH, query_vector=vector)
    return second_round(searcher, query, hits, k=DEPTH, query_vector=vector)


_LONG_WORD = re.compile(r"[a-z]{5,}")


def second_round(
    searcher: HybridSearcher,
    query: str,
    hits: list[ScoredChunk],
    *,
    k: int,
    query_vector: npt.NDArray[np.float32] | None = None,
    feedback: int = 5,
) -> list[ScoredChunk]:
    """A second retrieval round (pseudo-relevance feedback), for evidence spread over turns
    that share little with the question: the question plus the rare words (in fewer than one
    turn in ten, five letters or more, not already in it) that at least two of the
    ``feedback`` best turns share, searched again (with ``query_vector``, the question's own
    embedding: the words widen the lexical side only); both rankings fused by reciprocal rank."""
    base = key_terms(query)
    counts: dict[str, int] = {}
    for hit in hits[:feedback]:
        text = hit.chunk.text.split(": ", 1)[-1]  # the content, without the speaker and date
        for word in {w for w in _LONG_WORD.findall(text.lower()) if not key_terms(w) & base}:
            counts[word] = counts.get(word, 0) + 1
    shared = sorted((w for w in counts if counts[w] >= 2), key=lambda w: (-counts[w], w))
    if not shared:
        return hits
    built = searcher.index.built()
    frequencies = built.bm25.document_frequencies(shared)
    rare = [w for w, df in zip(shared, frequencies, strict=True) if df * 10 < len(built.chunks)]
    if not rare:
        return hits
    second = searcher.search(f"{query} {' '.join(rare[:8])}", k=k, query_vector=query_vector)
    score: dict[str, float] = {}
    first: dict[str, ScoredChunk] = {}
    for ranking in (hits, second):
        for rank, hit in enumerate(ranking):
            score[hit.chunk.doc_id] = score.get(hit.chunk.doc_id, 0.0) + 1.0 / (60 + rank + 1)
            first.setdefault(hit.chunk.doc_id, hit)
    return [first[i] for i in sorted(score, key=lambda i: -score[i])][:k]
