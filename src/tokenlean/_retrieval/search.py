"""Hybrid search: BM25 and dense candidates, fusion, reranking, near-duplicate removal, MMR."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tokenlean._errors import ConfigurationError, MissingDependencyError
from tokenlean._retrieval.documents import Chunk, key_terms
from tokenlean._retrieval.hybrid_index import HybridIndex

__all__ = [
    "CrossEncoderReranker",
    "HybridSearcher",
    "LexicalSemanticReranker",
    "Reranker",
    "ScoredChunk",
]

Fusion = Literal["rrf", "weighted"]


@dataclass(frozen=True)
class ScoredChunk:
    """A search result: the chunk, its final score and the signals behind it."""

    chunk: Chunk
    score: float
    dense: float
    lexical: float
    rank: int = 0


@runtime_checkable
class Reranker(Protocol):
    """Rescores candidates for a query; higher is more relevant."""

    def rerank(self, query: str, candidates: Sequence[ScoredChunk]) -> list[float]:
        """One score per candidate, in the candidates' order."""
        ...


class LexicalSemanticReranker:
    """The offline default: embedding similarity plus lexical features, no extra model.

    score = ``dense_weight`` x cosine + ``lexical_weight`` x BM25 (scaled to [0, 1] over the
    candidates) + ``coverage_weight`` x share of the query's terms found in the chunk.

    Example:
        >>> from tokenlean import Chunk
        >>> def candidate(text, dense, lexical):
        ...     return ScoredChunk(Chunk(text, "doc", 0, text, 0, len(text)), 0.0, dense, lexical)
        >>> candidates = [candidate("Shipping takes two days.", dense=0.5, lexical=1.0),
        ...               candidate("Refunds take five days.", dense=0.5, lexical=2.0),
        ...               candidate("Opening hours.", dense=0.6, lexical=0.0)]
        >>> scores = LexicalSemanticReranker().rerank("refund days", candidates)
        >>> [round(score, 2) for score in scores]  # the best lexical match now ranks first
        [0.75, 1.0, 0.6]
    """

    def __init__(
        self, dense_weight: float = 1.0, lexical_weight: float = 0.3, coverage_weight: float = 0.2
    ) -> None:
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self.coverage_weight = coverage_weight

    def rerank(self, query: str, candidates: Sequence[ScoredChunk]) -> list[float]:
        if not candidates:
            return []
        lexical = np.array([c.lexical for c in candidates], dtype=np.float64)
        top = lexical.max()
        lexical = lexical / top if top > 0 else lexical
        query_terms = key_terms(query)
        scores = []
        for candidate, lex in zip(candidates, lexical, strict=True):
            coverage = (
                len(query_terms & key_terms(candidate.chunk.text)) / len(query_terms)
                if query_terms
                else 0.0
            )
            scores.append(
                self.dense_weight * candidate.dense
                + self.lexical_weight * float(lex)
                + self.coverage_weight * coverage
            )
        return scores


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` (for users who have its weights locally).

    Raises:
        MissingDependencyError: sentence-transformers is not installed (extra ``embeddings``).
    """

    def __init__(self, model: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise MissingDependencyError(
                "sentence-transformers", "embeddings", "CrossEncoderReranker"
            ) from exc
        self._model = CrossEncoder(model, device=device)
        self.batch_size = batch_size

    def rerank(self, query: str, candidates: Sequence[ScoredChunk]) -> list[float]:
        if not candidates:
            return []
        pairs = [(query, c.chunk.text) for c in candidates]
        return [float(s) for s in self._model.predict(pairs, batch_size=self.batch_size)]


def _matches(metadata: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    for key, wanted in filters.items():
        value = metadata.get(key)
        if isinstance(wanted, list | tuple | set | frozenset):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


class HybridSearcher:
    """Ranks an index's chunks for a query.

    1. candidates: the top ``candidates`` by BM25 and the top ``candidates`` by embedding
       similarity (metadata filters applied to both);
    2. fusion: reciprocal rank fusion (``"rrf"``) or a weighted sum of scaled scores
       (``"weighted"``, ``alpha`` on the dense side);
    3. reranking of the fused candidates (default :class:`LexicalSemanticReranker`; ``None``
       keeps the fusion order);
    4. near-duplicate removal (chunk vectors above ``dedupe_threshold`` cosine) and, with
       ``diversity`` > 0, maximal marginal relevance.

    Raises:
        ConfigurationError: an unknown fusion or out-of-range parameter.

    Example:
        >>> from tokenlean.testing import HashingEmbedder
        >>> index = HybridIndex(embedder=HashingEmbedder())
        >>> index.add([
        ...     {"id": "refunds", "text": "Refunds are paid within five days of the return.",
        ...      "metadata": {"topic": "billing"}},
        ...     {"id": "shipping", "text": "Orders ship within two days from our warehouse.",
        ...      "metadata": {"topic": "delivery"}},
        ...     {"id": "returns", "text": "Returns are free for thirty days.",
        ...      "metadata": {"topic": "billing"}},
        ... ])
        3
        >>> searcher = HybridSearcher(index)
        >>> best = searcher.search("how long do refunds take", k=2)[0]
        >>> best.rank, best.chunk.doc_id, best.chunk.text
        (0, 'refunds', 'Refunds are paid within five days of the return.')
        >>> [r.chunk.doc_id for r in searcher.search("days", filters={"topic": "billing"})]
        ['returns', 'refunds']
    """

    def __init__(
        self,
        index: HybridIndex,
        *,
        fusion: Fusion = "rrf",
        alpha: float = 0.5,
        candidates: int = 100,
        reranker: Reranker | Literal["default"] | None = "default",
        dedupe_threshold: float = 0.97,
        diversity: float = 0.0,
    ) -> None:
        if fusion not in ("rrf", "weighted"):
            raise ConfigurationError(f"fusion must be 'rrf' or 'weighted', not {fusion!r}")
        if not 0.0 <= alpha <= 1.0 or not 0.0 <= diversity < 1.0 or candidates < 1:
            raise ConfigurationError("alpha in [0, 1], diversity in [0, 1), candidates >= 1")
        self.index = index
        self.fusion = fusion
        self.alpha = alpha
        self.candidates = candidates
        self.reranker: Reranker | None = (
            LexicalSemanticReranker() if reranker == "default" else reranker
        )
        self.dedupe_threshold = dedupe_threshold
        self.diversity = diversity
        # The last dense scores, by the vectors (a changed index has new arrays) and the query
        # vector they were computed for: a second search with the same vector (the memory's
        # second round) reuses them.
        self._last_dense: tuple[object, object, npt.NDArray[np.float32]] | None = None

    def _dense_scores(
        self, vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        last = self._last_dense
        if last is not None and last[0] is vectors and last[1] is query:
            return last[2]
        dense = _similarities(vectors, query)
        self._last_dense = (vectors, query, dense)
        return dense

    def embed_query(self, query: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self.index.embedder.embed([query])[0]
        return vector

    def search(
        self,
        query: str,
        *,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        query_vector: npt.NDArray[np.float32] | None = None,
        mode: Literal["hybrid", "lexical", "dense"] = "hybrid",
    ) -> list[ScoredChunk]:
        """The ``k`` best chunks for ``query`` (fewer if the index holds fewer).

        ``mode="lexical"`` ranks by BM25 alone and embeds nothing (each result's ``dense`` is
        0.0 unless ``query_vector`` is given); ``"dense"`` by embedding similarity alone."""
        if k < 1:
            return []
        built = self.index.built()
        if not built.chunks or not query.strip():
            return []
        allowed: npt.NDArray[np.bool_] | None = None
        if filters:
            allowed = np.array([_matches(c.metadata, filters) for c in built.chunks])
            if not allowed.any():
                return []
        n = min(self.candidates, len(built.chunks))
        lexical = built.bm25.scores(query)
        if mode == "lexical" and query_vector is None:  # not asked for: nothing is embedded
            dense = np.zeros(len(built.chunks), dtype=np.float32)
        else:
            qvec = self.embed_query(query) if query_vector is None else query_vector
            dense = self._dense_scores(built.vectors, qvec)
        if allowed is not None:
            lexical = np.where(allowed, lexical, -np.inf)
            dense = np.where(allowed, dense, -np.inf)
        lexical_top = _top(lexical, n) if mode != "dense" else []
        dense_top = _top(dense, n) if mode != "lexical" else []
        lexical_top = [i for i in lexical_top if lexical[i] > 0]  # no shared term: no match
        fused: dict[int, float] = {}
        if self.fusion == "rrf" or mode != "hybrid":
            for ranking in (lexical_top, dense_top):
                for rank, position in enumerate(ranking):
                    fused[position] = fused.get(position, 0.0) + 1.0 / (60 + rank + 1)
        else:
            pool = sorted(set(lexical_top) | set(dense_top))
            lex = _scaled(np.array([lexical[i] for i in pool]))
            den = _scaled(np.array([dense[i] for i in pool]))
            for position, lex_score, dense_score in zip(pool, lex, den, strict=True):
                fused[position] = self.alpha * dense_score + (1 - self.alpha) * lex_score
        results = [
            ScoredChunk(built.chunks[i], score, float(dense[i]), float(max(lexical[i], 0.0)))
            for i, score in sorted(fused.items(), key=lambda item: -item[1])
        ]
        if self.reranker is not None and mode == "hybrid":
            scores = self.reranker.rerank(query, results)
            results = [
                ScoredChunk(r.chunk, s, r.dense, r.lexical)
                for r, s in zip(results, scores, strict=True)
            ]
            results.sort(key=lambda r: -r.score)
        positions = {id(built.chunks[i]): i for i in fused}  # the candidates' only
        results = self._dedupe_and_diversify(results, built.vectors, positions, k)
        # built directly: dataclasses.replace costs microseconds a call, on hundreds of candidates
        return [
            ScoredChunk(r.chunk, r.score, r.dense, r.lexical, rank)
            for rank, r in enumerate(results[:k])
        ]

    def _dedupe_and_diversify(
        self,
        results: list[ScoredChunk],
        vectors: npt.NDArray[np.float32],
        positions: dict[int, int],
        k: int,
    ) -> list[ScoredChunk]:
        if not results:
            return results
        matrix = vectors[[positions[id(r.chunk)] for r in results]]
        chosen: list[int] = []
        remaining = list(range(len(results)))
        while remaining and len(chosen) < k:
            if self.diversity > 0 and chosen:
                similarity = (matrix[remaining] @ matrix[chosen].T).max(axis=1)
                relevance = np.array([results[i].score for i in remaining])
                mmr = (1 - self.diversity) * relevance - self.diversity * similarity
                pick = remaining[int(np.argmax(mmr))]
            else:
                pick = remaining[0]
            remaining.remove(pick)
            if chosen and float((matrix[chosen] @ matrix[pick]).max()) >= self.dedupe_threshold:
                continue  # a near-duplicate of a chunk already chosen
            chosen.append(pick)
        return [results[i] for i in chosen]


def _similarities(
    vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """``vectors @ query`` on the calling thread. A matrix-vector product reads each stored
    vector once and is bound by memory, not arithmetic, so BLAS's threads gain little on it;
    and once woken they spin for a while after it, on the cores the next query's embedding
    needs (measured: several times slower than one thread when the cores are busy).
    ``einsum`` without ``optimize`` never calls BLAS."""
    scores: npt.NDArray[np.float32] = np.einsum("ij,j->i", vectors, query)
    return scores


def _top(scores: npt.NDArray[np.float32], n: int) -> list[int]:
    finite = np.isfinite(scores)
    n = min(n, int(finite.sum()))
    if n <= 0:
        return []
    part = np.argpartition(-np.where(finite, scores, -np.inf), n - 1)[:n]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]


def _scaled(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    if values.size == 0:
        return values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.ones_like(values, dtype=np.float64)
    return (values - low) / (high - low)
