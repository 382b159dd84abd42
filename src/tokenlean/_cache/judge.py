"""Answer judges: would the cached answer have been right where the model gave a fresh one?

The error-bounded semantic cache learns from its own traffic. When a lookup misses (or explores)
while a candidate entry was near, the model's fresh answer is compared with the candidate's
cached answer, and the verdict becomes evidence. A judge is a callable
``(cached_value, fresh_value) -> bool | None``; None means "cannot tell" and adds no evidence.

:class:`DefaultAnswerJudge` needs no model call: equal normalized texts are the same answer,
differing numbers are different answers, and otherwise the two answers' embeddings decide
(cosine at least ``min_similarity``). :class:`PromptAnswerJudge` asks an LLM instead; the
LangChain and LlamaIndex adapters build one from a chat model or an LLM.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tokenlean._embeddings import Embedder

__all__ = [
    "AnswerJudge",
    "DefaultAnswerJudge",
    "PromptAnswerJudge",
    "answer_text",
    "equal_answers",
]

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
        try:
            vectors = np.asarray(self.embedder.embed([raw_a, raw_b]), dtype=np.float32)
        except Exception:  # no verdict: a failing embedder is not evidence either way
            return None
        shaped = vectors.ndim == 2 and vectors.shape[0] == 2
        similarity = float(np.dot(vectors[0], vectors[1])) if shaped else float("nan")
        if not np.isfinite(similarity):  # NaN or a wrong shape: no verdict, not "different"
            return None
        return bool(similarity >= self.min_similarity)


class PromptAnswerJudge:
    """Asks an LLM, through a ``complete(prompt) -> text`` function, whether two answers say the
    same thing. A reply that starts with neither "yes" nor "no" is no verdict (None), and so is
    a failed call: a judge never fails the request it learns from.

    Example:
        >>> judge = PromptAnswerJudge(lambda prompt: "Yes, both say 14 days.")
        >>> judge("Refunds take 14 days.", {"content": "Two weeks for a refund."})
        True
        >>> PromptAnswerJudge(lambda prompt: "It depends.")("a", "b") is None
        True
    """

    PROMPT = (
        "Two answers were given to the same kind of question. Would a user asking it be as well "
        "served by answer A as by answer B: the same facts, numbers, names and advice? Reply "
        "with one word, yes or no.\n\nAnswer A:\n{cached}\n\nAnswer B:\n{fresh}"
    )

    def __init__(self, complete: Callable[[str], str], *, prompt: str | None = None) -> None:
        self.complete = complete
        self.prompt = prompt or self.PROMPT

    def __call__(self, cached: Any, fresh: Any) -> bool | None:
        a, b = answer_text(cached).strip(), answer_text(fresh).strip()
        if not a or not b:
            return None
        if _normalize(a) == _normalize(b):
            return True
        try:
            reply = self.complete(self.prompt.format(cached=a, fresh=b))
        except Exception:  # a judge's failure is no evidence, never a failed model call
            return None
        words = re.findall(r"[a-z]+", str(reply).lower())
        if not words or words[0] not in ("yes", "no"):
            return None
        return bool(words[0] == "yes")
