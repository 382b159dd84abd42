"""Routing gates: what decides, per request, whether the small model path can answer.

A gate is anything with the :class:`Gate` method ``decide(text, *, tools, risk)``: it returns
a :class:`RouteDecision` or ``None`` to leave the request to the next gate. Two are provided:
:class:`RuleGate` (length, required tools, keywords, explicit requests for depth, risk flags) and
:class:`LearnedGate` (a k-nearest-neighbour classifier over the default embeddings, trained on
labelled examples and saved locally).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from tokenlean._embeddings import Embedder, as_embedder
from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._extras import require

__all__ = ["Gate", "LearnedGate", "RouteDecision", "RuleGate"]

Path_ = Literal["small", "large"]


@dataclass(frozen=True)
class RouteDecision:
    """Which path a request takes, why, and (for learned gates) how sure the gate is."""

    path: Path_
    reason: str
    confidence: float = 1.0


@runtime_checkable
class Gate(Protocol):
    """What a :class:`~tokenlean.Router` asks of a gate.

    ``decide`` gets the request's text and the caller's flags (the request needs ``tools``; it is
    flagged as ``risk``-y) and returns a :class:`RouteDecision`, or ``None`` to let the next gate
    decide. The router consults its gates in order; the first decision wins.

    Example:
        >>> class ShortQuestions:
        ...     def decide(self, text, *, tools=False, risk=False):
        ...         return RouteDecision("small", "short") if len(text) < 20 else None
        >>> isinstance(ShortQuestions(), Gate)
        True
        >>> ShortQuestions().decide("hi?")
        RouteDecision(path='small', reason='short', confidence=1.0)
    """

    def decide(
        self, text: str, *, tools: bool = False, risk: bool = False
    ) -> RouteDecision | None: ...


_DEPTH = re.compile(
    r"\b(step[- ]by[- ]step|in depth|in detail|think (carefully|hard)|thorough(ly)?|"
    r"explain why|prove|derive)\b",
    re.IGNORECASE,
)


class RuleGate:
    """Routes by explicit rules; returns None when no rule applies (another gate decides).

    Args:
        max_small_tokens: longer prompts go to the large path.
        large_keywords: words that need the large path (``"contract"``, ``"diagnosis"``…).
        tools_need_large: requests that require tools go to the large path.
        counter: token counter for the length rule.

    Example:
        >>> gate = RuleGate(max_small_tokens=50, large_keywords=["contract"])
        >>> gate.decide("review this contract").reason
        "keyword 'contract'"
        >>> gate.decide("explain why the sky is blue").reason
        'asks for depth'
        >>> gate.decide("what time is it?", tools=True).reason
        'requires tools'
        >>> gate.decide("what time is it?") is None  # no rule applies
        True
    """

    def __init__(
        self,
        *,
        max_small_tokens: int = 2000,
        large_keywords: Sequence[str] = (),
        tools_need_large: bool = True,
        counter: Callable[[str], int] | None = None,
    ) -> None:
        from tokenlean._tokens.counting import get_token_counter

        self.max_small_tokens = max_small_tokens
        self.keywords = re.compile(
            r"\b(" + "|".join(re.escape(k) for k in large_keywords) + r")\b", re.IGNORECASE
        ) if large_keywords else None  # fmt: skip
        self.tools_need_large = tools_need_large
        self.counter = counter or get_token_counter()

    def decide(self, text: str, *, tools: bool = False, risk: bool = False) -> RouteDecision | None:
        if risk:
            return RouteDecision("large", "risk flag")
        if tools and self.tools_need_large:
            return RouteDecision("large", "requires tools")
        if self.counter(text) > self.max_small_tokens:
            return RouteDecision("large", f"longer than {self.max_small_tokens} tokens")
        if _DEPTH.search(text):
            return RouteDecision("large", "asks for depth")
        if self.keywords is not None and (match := self.keywords.search(text)):
            return RouteDecision("large", f"keyword {match.group(0)!r}")
        return None


class LearnedGate:
    """A k-nearest-neighbour gate over sentence embeddings, trained from labelled examples.

    ``train(texts, needs_large)`` stores the examples' embeddings; ``decide`` takes the weighted
    vote of the ``k`` nearest examples (cosine-weighted). Saved and loaded as a local ``.npz``;
    nothing touches the network.

    Raises:
        InvalidInputError: training data of mismatched lengths, or empty.

    Example:
        >>> from tokenlean.testing import HashingEmbedder
        >>> gate = LearnedGate(HashingEmbedder(64), k=3).train(
        ...     ["reset my password", "what are your opening hours", "track my parcel",
        ...      "draft a merger contract", "analyse this tax dispute", "review the contract"],
        ...     [False, False, False, True, True, True])
        >>> gate.decide("when are your opening hours").path
        'small'
        >>> decision = gate.decide("check this contract")
        >>> decision.path, decision.reason
        ('large', 'learned gate p(large)=1.00')
    """

    def __init__(
        self, embedder: Embedder | None = None, *, k: int = 7, threshold: float = 0.5
    ) -> None:
        if embedder is None:
            require("embeddings", what="LearnedGate's default embedder")
        self._embedder = as_embedder(embedder) if embedder is not None else None
        self.k = k
        self.threshold = threshold
        self._vectors: npt.NDArray[np.float32] | None = None
        self._labels: npt.NDArray[np.float32] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            from tokenlean._embeddings import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def train(self, texts: Sequence[str], needs_large: Sequence[bool]) -> LearnedGate:
        if len(texts) != len(needs_large) or not texts:
            raise InvalidInputError("train() needs as many labels as texts, and at least one")
        self._vectors = self.embedder.embed(list(texts))
        self._labels = np.array([1.0 if flag else 0.0 for flag in needs_large], dtype=np.float32)
        return self

    def probability_large(self, text: str) -> float:
        return self.probabilities_large([text])[0]

    def probabilities_large(self, texts: Sequence[str]) -> list[float]:
        """:meth:`probability_large` of several texts, with one embedding call."""
        if self._vectors is None or self._labels is None:
            raise ConfigurationError("the learned gate is not trained")
        if not texts:
            return []
        probabilities = []
        for scores in self.embedder.embed(list(texts)) @ self._vectors.T:
            nearest = np.argsort(-scores)[: self.k]
            weights = np.clip(scores[nearest], 1e-6, None)
            probabilities.append(float((weights * self._labels[nearest]).sum() / weights.sum()))
        return probabilities

    def decide(self, text: str, **_: Any) -> RouteDecision:
        p = self.probability_large(text)
        if p >= self.threshold:
            return RouteDecision("large", f"learned gate p(large)={p:.2f}", p)
        return RouteDecision("small", f"learned gate p(large)={p:.2f}", 1 - p)

    def save(self, path: str | Path) -> None:
        if self._vectors is None or self._labels is None:
            raise ConfigurationError("the learned gate is not trained")
        np.savez(Path(path), vectors=self._vectors, labels=self._labels,
                 k=self.k, threshold=self.threshold)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> LearnedGate:
        try:
            data = np.load(Path(path), allow_pickle=False)
            gate = cls(embedder, k=int(data["k"]), threshold=float(data["threshold"]))
            gate._vectors, gate._labels = data["vectors"], data["labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigurationError(f"cannot load a learned gate from {path}: {exc}") from exc
        return gate
