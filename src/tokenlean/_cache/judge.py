"""Answer judges: would the cached answer have been right where the model gave a fresh one?

The error-bounded semantic cache learns from its own traffic. When a lookup misses (or explores)
while a candidate entry was near, the model's fresh answer is compared with the candidate's
cached answer, and the verdict becomes evidence. A judge is a callable
``(cached_value, fresh_value) -> bool | None``; None means "cannot tell" and adds no evidence.

:class:`DefaultAnswerJudge` needs no model call: equal normalized texts are the same answer,
differing numbers are different answers, and otherwise the two answers' embeddings decide
(cosine at least ``min_similarity``). An LLM judge plugs in through the adapters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tokenlean._embeddings import Embedder

__all__ = ["AnswerJudge", "DefaultAnswerJudge", "answer_text", "equal_answers"]

AnswerJudge = Callable[[Any, Any], "bool | None"]
"""``(cached_value, fresh_value) -> True (same answer) | False (different) | None (unknown)``."""

_TEXT_KEYS = ("content", "text", "answer", "response", "output")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def answer_text(value: Any) -> str:
    """The text of a cached value: a string, or the text fields (``content``, ``text``,
    ``answer``, ``response``, ``output``) found anywhere in it, in order.

    Example:
        >>> answer_text([{"message": {"data": {"content": "Paris."}}}])
        'Paris.'
    """
    if isinstance(value, str):
        return value
    parts: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, Mapping):
            for key, child in item.items():
                if key in _TEXT_KEYS and isinstance(child, str):
                    parts.append(child)
                else:
                    walk(child)
        elif isinstance(item, Sequence) and not isinstance(item, str | bytes):
            for child in item:
                walk(child)

    walk(value)
    return "\n".join(parts)


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def equal_answers(cached: Any, fresh: Any) -> bool:
    """A judge for deterministic answers: the values are equal (the stream benchmark's)."""
    return bool(cached == fresh)


class DefaultAnswerJudge:
    """Same answer when the normalized texts match; different when their numbers differ;
    otherwise, same when the answers' embeddings reach ``min_similarity``.

    Args:
        embedder: embeds the two answers (only when the cheap checks cannot decide).
        min_similarity: least cosine of two answers judged the same.

    Example:
        >>> judge = DefaultAnswerJudge(embedder=None)
        >>> judge({"content": "Refunds take 14 days."}, {"content": "refunds take 14 days"})
        True
        >>> judge("Refunds take 14 days.", "Refunds take 30 days.")
        False
    """

    def __init__(self, embedder: Embedder | None, *, min_similarity: float = 0.9) -> None:
        self.embedder = embedder
        self.min_similarity = min_similarity

    def __call__(self, cached: Any, fresh: Any) -> bool | None:
        raw_a, raw_b = answer_text(cached), answer_text(fresh)
        a, b = _normalize(raw_a), _normalize(raw_b)
        if not a or not b:
            return None
        if a == b:
            return True
        if set(_NUMBER.findall(a)) != set(_NUMBER.findall(b)):
            return False
        if self.embedder is None:
            return None
        vectors = self.embedder.embed([raw_a, raw_b])
        return bool(float(np.dot(vectors[0], vectors[1])) >= self.min_similarity)
