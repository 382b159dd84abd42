"""BM25 over chunks, with bm25s's tokenizer and a Snowball stemmer when available.

:class:`IncrementalBM25` is what the hybrid index searches: it takes appends at the cost of the
new texts and scores exactly as :class:`BM25Index` (bm25s, rebuilt as a whole) would over the
same texts.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._errors import MissingDependencyError

__all__ = ["BM25Index", "IncrementalBM25"]

logger = logging.getLogger("tokenlean.retrieval")


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:
        raise MissingDependencyError("bm25s", "retrieval", "Lexical (BM25) search") from exc
    return bm25s


def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer ships with the retrieval extra
        logger.warning("tokenlean: PyStemmer not installed; BM25 runs without stemming")
        return None


def _tokenize(texts: Sequence[str], stemmer: Any) -> list[list[str]]:
    if not texts:
        return []
    tokens: list[list[str]] = _bm25s().tokenize(
        list(texts), stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    return tokens


class BM25Index:
    """BM25 scores of a fixed list of texts, with bm25s (immutable: rebuilt as a whole). The
    reference that :class:`IncrementalBM25` scores the same as."""

    def __init__(self, texts: Sequence[str]) -> None:
        bm25s = _bm25s()
        self._stemmer = _stemmer()
        self._lock = threading.Lock()
        self.size = len(texts)
        self._model: Any = None
        if texts:
            tokens = bm25s.tokenize(
                list(texts), stopwords="en", stemmer=self._stemmer, show_progress=False
            )
            model = bm25s.BM25()
            model.index(tokens, show_progress=False)
            self._model = model

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 score of every text for ``query`` (zeros when nothing matches)."""
        if self._model is None:
            return np.zeros(self.size, dtype=np.float32)
        bm25s = _bm25s()
        tokens = bm25s.tokenize(
            query, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )[0]
        known = [t for t in tokens if t in self._model.vocab_dict]
        if not known:
            return np.zeros(self.size, dtype=np.float32)
        with self._lock:
            scores: npt.NDArray[np.float32] = np.asarray(
                self._model.get_scores(known), dtype=np.float32
            )
        return scores


# bm25s's defaults, the Lucene variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
# term score = idf * tf / (tf + k1 * (1 - b + b * length / average length)).
_K1 = 1.5
_B = 0.75
_FOLD_SHARE = 0.1  # the tail is folded into the bulk past this share of the bulk's documents


class _Store:
    """Postings of the documents numbered ``0 .. n_docs - 1``: the bulk (the first ``n_bulk``)
    in column arrays, one column per term, and the tail (the later ones) in per-term lists that
    only grow. Snapshots of one store see the documents below their own size only."""

    def __init__(
        self, terms: list[str], term_ids: npt.NDArray[np.int64], docs: npt.NDArray[np.int64],
        tfs: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], n_docs: int,
    ) -> None:  # fmt: skip
        order = np.lexsort((docs, term_ids))
        self.vocab = {term: i for i, term in enumerate(terms)}
        self.indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(term_ids, minlength=len(terms)), out=self.indptr[1:])
        self.docs = docs[order]
        self.tfs = tfs[order].astype(np.float64)
        self.lengths = lengths[order].astype(np.float64)
        self.n_bulk = n_docs
        self.n_docs = n_docs
        self.tail: dict[str, list[tuple[int, int, int]]] = {}  # term: (doc, tf, length)

    @classmethod
    def build(
        cls, tokens: Sequence[Sequence[str]], first: int = 0, previous: _Store | None = None
    ) -> _Store:
        """The store of ``previous``'s documents below ``first`` (bulk and tail), and then of
        ``tokens``, numbered from ``first``."""
        terms: list[str] = []
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        docs: list[int] = []
        tfs: list[int] = []
        lengths: list[int] = []

        def term_id(term: str) -> int:
            found = vocab.get(term)
            if found is None:
                found = vocab[term] = len(terms)
                terms.append(term)
            return found

        arrays: list[tuple[npt.NDArray[np.int64], ...]] = []
        if previous is not None:
            for term in previous.vocab:
                term_id(term)
            counts = np.diff(previous.indptr)
            keep = previous.docs < first
            arrays.append((
                np.repeat(np.arange(len(counts), dtype=np.int64), counts)[keep],
                previous.docs[keep], previous.tfs[keep].astype(np.int64),
                previous.lengths[keep].astype(np.int64),
            ))  # fmt: skip
            for term, entries in list(previous.tail.items()):
                tid = term_id(term)
                for doc, tf, length in list(entries):
                    if doc < first:
                        term_ids.append(tid)
                        docs.append(doc)
                        tfs.append(tf)
                        lengths.append(length)
        for offset, doc_tokens in enumerate(tokens):
            for term, tf in Counter(doc_tokens).items():
                term_ids.append(term_id(term))
                docs.append(first + offset)
                tfs.append(tf)
                lengths.append(len(doc_tokens))
        arrays.append(tuple(np.asarray(a, dtype=np.int64) for a in (term_ids, docs, tfs, lengths)))
        term_array, doc_array, tf_array, length_array = (
            np.concatenate([a[i] for a in arrays]) for i in range(4)
        )
        return cls(terms, term_array, doc_array, tf_array, length_array, first + len(tokens))

    def append(self, tokens: Sequence[Sequence[str]]) -> None:
        for doc_tokens in tokens:
            length = len(doc_tokens)
            for term, tf in Counter(doc_tokens).items():
                self.tail.setdefault(term, []).append((self.n_docs, tf, length))
            self.n_docs += 1

    def postings(
        self, term: str, below: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Documents below ``below`` holding ``term``, with its count and their lengths."""
        column = self.vocab.get(term)
        if column is None:
            start = end = 0
        else:
            start, end = int(self.indptr[column]), int(self.indptr[column + 1])
        docs, tfs, lengths = self.docs[start:end], self.tfs[start:end], self.lengths[start:end]
        entries = [entry for entry in list(self.tail.get(term, ())) if entry[0] < below]
        if entries:
            tail = np.asarray(entries, dtype=np.int64)
            docs = np.concatenate([docs, tail[:, 0]])
            tfs = np.concatenate([tfs, tail[:, 1].astype(np.float64)])
            lengths = np.concatenate([lengths, tail[:, 2].astype(np.float64)])
        return docs, tfs, lengths


class IncrementalBM25:
    """BM25 scores of a list of texts that grows by insertions at the cost of the new texts.

    Scores equal :class:`BM25Index`'s over the same list (bm25s's Lucene BM25, k1 1.5, b 0.75,
    its tokenizer; up to float rounding): document frequencies, the document count and the
    average length are those of the whole list, kept up to date, and applied at query time.
    The texts indexed as a whole are held in column arrays, later ones in a small tail of
    per-term lists, folded into the arrays once it passes a tenth of them. Immutable: an
    insertion returns a new index (searches under way on the old one are not disturbed).

    Example:
        >>> index = IncrementalBM25(["refunds take five days", "shipping takes two days"])
        >>> index = index.inserted([1], ["a refund request"])  # between the two
        >>> [round(float(s), 3) for s in index.scores("refund")]
        [0.172, 0.229, 0.0]
    """

    def __init__(self, texts: Sequence[str] = ()) -> None:
        self._stemmer = _stemmer()
        tokens = _tokenize(texts, self._stemmer)
        self._store = _Store.build(tokens)
        self.size = len(texts)
        self._total_length = sum(len(doc_tokens) for doc_tokens in tokens)
        self._order: npt.NDArray[np.int64] | None = None  # position: document number

    def inserted(self, positions: Sequence[int], texts: Sequence[str]) -> IncrementalBM25:
        """A new index of this one's texts with ``texts`` inserted before ``positions`` (as
        ``numpy.insert``: indexes into the current list, in order)."""
        if len(positions) != len(texts):
            raise ValueError("one position per inserted text")
        tokens = _tokenize(texts, self._stemmer)
        new = object.__new__(IncrementalBM25)
        new._stemmer = self._stemmer
        new.size = self.size + len(texts)
        new._total_length = self._total_length + sum(len(doc_tokens) for doc_tokens in tokens)
        store = self._store
        tail = store.n_docs - store.n_bulk + len(texts)
        if store.n_docs != self.size or tail > _FOLD_SHARE * store.n_bulk:
            # the tail is too long, or another insertion was made from this index: new arrays
            new._store = _Store.build(tokens, first=self.size, previous=store)
        else:
            store.append(tokens)
            new._store = store
        numbers = np.arange(self.size, new.size, dtype=np.int64)
        if self._order is None and all(p == self.size for p in positions):
            new._order = None
        else:
            order = np.arange(self.size, dtype=np.int64) if self._order is None else self._order
            new._order = np.insert(order, np.asarray(positions, dtype=np.int64), numbers)
        return new

    def document_frequencies(self, words: Sequence[str]) -> list[int]:
        """How many texts hold each word, as the tokenizer and stemmer see it (0 for a stop
        word; a word the tokenizer splits counts its rarest part's texts).

        Example:
            >>> IncrementalBM25(["refunds take days", "a refund", "shipping"]).document_frequencies(
            ...     ["refund", "the", "parcel"])
            [2, 0, 0]
        """
        counts = []
        for terms in _tokenize(words, self._stemmer):
            sizes = [len(self._store.postings(term, below=self.size)[0]) for term in terms]
            counts.append(min(sizes, default=0))
        return counts

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """BM25 score of every text for ``query``, in the list's order (zeros when nothing
        matches)."""
        if self.size == 0:
            return np.zeros(0, dtype=np.float32)
        terms = Counter(_tokenize([query], self._stemmer)[0])
        n, average = self.size, self._total_length / self.size
        scores = np.zeros(n, dtype=np.float64)
        for term, weight in terms.items():
            docs, tfs, lengths = self._store.postings(term, below=n)
            if not len(docs):
                continue
            df = len(docs)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            scores[docs] += weight * idf * tfs / (tfs + _K1 * (1 - _B + _B * lengths / average))
        if self._order is not None:
            scores = scores[self._order]
        return scores.astype(np.float32)
