"""Model routing: send each request to the smallest model path that can do it.

A gate picks a path per request: :class:`RuleGate` (length, required tools, keywords, explicit
requests for depth, risk flags) and :class:`LearnedGate` (a k-nearest-neighbour classifier over
the default embeddings, trained on labelled examples and saved locally). :class:`Router` runs
the small path, asks a confidence signal (a verifier callable, log-probabilities, a self-check)
whether to trust it, and escalates to the large path when not; high-risk requests go straight to
the large path. It keeps the figures: share per path, escalation rate, cost per request and per
successful resolution.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from tokenlean._embeddings import Embedder
from tokenlean._errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsCollector

__all__ = ["LearnedGate", "RouteDecision", "Router", "RouterMetrics", "RuleGate"]

Path_ = Literal["small", "large"]


@dataclass(frozen=True)
class RouteDecision:
    """Which path a request takes, why, and (for learned gates) how sure the gate is."""

    path: Path_
    reason: str
    confidence: float = 1.0


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
    """

    def __init__(
        self,
        *,
        max_small_tokens: int = 2000,
        large_keywords: Sequence[str] = (),
        tools_need_large: bool = True,
        counter: Callable[[str], int] | None = None,
    ) -> None:
        from tokenlean._tokens import get_token_counter

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
    """

    def __init__(
        self, embedder: Embedder | None = None, *, k: int = 7, threshold: float = 0.5
    ) -> None:
        self._embedder = embedder
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


@dataclass
class RouterMetrics:
    """Share per path, escalations, cost per request and per successful resolution."""

    requests: int = 0
    small: int = 0
    large: int = 0
    escalations: int = 0
    cost: float = 0.0
    successes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            n = max(self.requests, 1)
            return {
                "requests": self.requests,
                "share_small": round(self.small / n, 4),
                "share_large": round(self.large / n, 4),
                "escalation_rate": round(self.escalations / n, 4),
                "cost_per_request": round(self.cost / n, 6),
                "cost_per_success": round(self.cost / self.successes, 6) if self.successes else 0.0,
                "successes": self.successes,
            }


class Router:
    """Routes requests between a small and a large model path, escalating on low confidence.

    Args:
        small: ``fn(request) -> answer`` (sync) for the small path.
        large: the same for the large path.
        gates: consulted in order; the first decision wins (default: small).
        verifier: ``fn(request, answer) -> confidence in [0, 1]`` for small-path answers.
        min_confidence: below it, the small answer is discarded and the large path runs.
        cost: ``{"small": …, "large": …}`` cost of one call of each path.

    Example:
        >>> router = Router(small=lambda q: "small:" + q, large=lambda q: "large:" + q,
        ...                 gates=[RuleGate(large_keywords=["contract"])])
        >>> router.run("hello"), router.run("review this contract")
        ('small:hello', 'large:review this contract')
    """

    def __init__(
        self,
        *,
        small: Callable[[Any], Any],
        large: Callable[[Any], Any],
        gates: Sequence[Any] = (),
        verifier: Callable[[Any, Any], float] | None = None,
        min_confidence: float = 0.5,
        cost: dict[str, float] | None = None,
        text: Callable[[Any], str] = str,
        collector: MetricsCollector | None = None,
    ) -> None:
        self.collector = collector
        self.small, self.large = small, large
        self.gates = list(gates)
        self.verifier = verifier
        self.min_confidence = min_confidence
        self.costs = {"small": 1.0, "large": 10.0, **(cost or {})}
        self.text = text
        self.metrics = RouterMetrics()

    def decide(self, request: Any, *, tools: bool = False, risk: bool = False) -> RouteDecision:
        """The path for ``request`` (without running it)."""
        if risk:
            return RouteDecision("large", "risk flag")
        text = self.text(request)
        for gate in self.gates:
            decision = gate.decide(text, tools=tools, risk=risk)
            if decision is not None:
                return decision  # type: ignore[no-any-return]
        return RouteDecision("small", "default")

    def escalates(self, request: Any, answer: Any) -> bool:
        """Whether a small-path ``answer`` is too unsure to keep (the verifier's confidence is
        below ``min_confidence``); never without a verifier."""
        return self.verifier is not None and self.verifier(request, answer) < self.min_confidence

    def record(self, path: Path_, *, escalated: bool = False) -> None:
        """Count one routed request that ended on ``path`` (an escalated one called both paths),
        for callers that run the paths themselves (streams, framework adapters)."""
        with self.metrics.lock:
            self.metrics.requests += 1
            setattr(self.metrics, path, getattr(self.metrics, path) + 1)
            self.metrics.escalations += int(escalated)
            calls = ("small", "large") if escalated else (path,)
            self.metrics.cost += sum(self.costs[c] for c in calls)
        if self.collector is not None:
            self.collector.record_routing(escalated)

    def record_outcome(self, success: bool) -> None:
        """Report whether the last answer resolved the task (for cost per success)."""
        with self.metrics.lock:
            self.metrics.successes += int(success)

    def run(self, request: Any, *, tools: bool = False, risk: bool = False) -> Any:
        """Answer ``request`` on the chosen path, escalating when the small answer is unsure."""
        decision = self.decide(request, tools=tools, risk=risk)
        if decision.path == "large":
            answer = self.large(request)
            self.record("large")
            return answer
        answer = self.small(request)
        if self.escalates(request, answer):
            answer = self.large(request)
            self.record("large", escalated=True)
            return answer
        self.record("small")
        return answer

    async def arun(self, request: Any, *, tools: bool = False, risk: bool = False) -> Any:
        """:meth:`run` for async paths (``small``/``large`` returning awaitables)."""
        decision = await asyncio.to_thread(self.decide, request, tools=tools, risk=risk)

        async def call(fn: Callable[[Any], Any]) -> Any:
            result = fn(request)
            return await result if isinstance(result, Awaitable) else result

        if decision.path == "large":
            answer = await call(self.large)
            self.record("large")
            return answer
        answer = await call(self.small)
        if self.escalates(request, answer):
            answer = await call(self.large)
            self.record("large", escalated=True)
            return answer
        self.record("small")
        return answer
