"""BM25 over chunks, with bm25s (sparse-matrix BM25) and a Snowball stemmer when available."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tokenlean._errors import MissingDependencyError

__all__ = ["BM25Index"]

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


class BM25Index:
    """BM25 scores of a fixed list of texts. Rebuilt as a whole (bm25s indexes are immutable);
    :class:`HybridIndex` rebuilds it lazily after changes, which takes well under a second for
    tens of thousands of chunks."""

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
