"""Model routing: send each request to the smallest model path that can do it.

:class:`Router` asks its gates (:mod:`tokenlean._routing.gates`: :class:`RuleGate`,
:class:`LearnedGate`, or any :class:`Gate`) which path a request takes, runs the small path,
asks a confidence signal (a verifier callable, log-probabilities, a self-check) whether to trust
it, and escalates to the large path when not; high-risk requests go straight to the large path.
It keeps the figures: share per path, escalation rate, cost per request and per successful
resolution.

A fault on the small path escalates: a small path that raises, or a verifier that raises, sends
the request to the large path (logged, and counted in ``small_errors``); the large path is the
last resort, and its error reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tokenlean._errors import ConfigurationError
from tokenlean._routing.gates import Gate, LearnedGate, Path_, RouteDecision, RuleGate

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

# The gates and the decision are re-exported for modules that import them from here.
__all__ = ["Gate", "LearnedGate", "RouteDecision", "Router", "RouterMetrics", "RuleGate"]

logger = logging.getLogger("tokenlean.routing")


@dataclass
class RouterMetrics:
    """Share per path, escalations, cost per request and per successful resolution.

    A :class:`Router` fills it in (``router.metrics``); ``snapshot()`` gives the rounded figures.

    Example:
        >>> metrics = RouterMetrics(requests=4, small=3, large=1, escalations=1, cost=14.0,
        ...                         successes=2)
        >>> figures = metrics.snapshot()
        >>> figures["share_small"], figures["escalation_rate"], figures["cost_per_request"]
        (0.75, 0.25, 3.5)
        >>> figures["cost_per_success"]
        7.0
    """

    requests: int = 0
    small: int = 0
    large: int = 0
    escalations: int = 0
    cost: float = 0.0
    successes: int = 0
    small_errors: int = 0
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
                "small_errors": self.small_errors,
            }


class Router:
    """Routes requests between a small and a large model path, escalating on low confidence.

    Args:
        small: ``fn(request) -> answer`` for the small path (sync, or async for :meth:`arun`);
            None when every call brings its own (``run(request, small=..., large=...)``).
        large: the same for the large path.
        gates: consulted in order; the first decision wins (default: small).
        verifier: ``fn(request, answer) -> confidence in [0, 1]`` for small-path answers.
        min_confidence: below it, the small answer is discarded and the large path runs.
        cost: ``{"small": …, "large": …}`` cost of one call of each path.

    Example:
        >>> router = Router(small=lambda q: "small:" + q, large=lambda q: "large:" + q,
        ...                 gates=[RuleGate(large_keywords=["contract"])],
        ...                 verifier=lambda q, answer: 0.2 if q.endswith("?") else 0.9)
        >>> router.decide("review this contract")
        RouteDecision(path='large', reason="keyword 'contract'", confidence=1.0)
        >>> router.run("hello"), router.run("review this contract")
        ('small:hello', 'large:review this contract')
        >>> router.run("why?")  # the verifier doubts the small answer: escalated
        'large:why?'
        >>> router.run("urgent", risk=True)  # risky requests go straight to the large path
        'large:urgent'
        >>> figures = router.metrics.snapshot()
        >>> figures["share_small"], figures["escalation_rate"], figures["cost_per_request"]
        (0.25, 0.25, 8.0)
    """

    def __init__(
        self,
        *,
        small: Callable[[Any], Any] | None = None,
        large: Callable[[Any], Any] | None = None,
        gates: Sequence[Gate] = (),
        verifier: Callable[[Any, Any], float] | None = None,
        min_confidence: float = 0.5,
        cost: dict[str, float] | None = None,
        text: Callable[[Any], str] = str,
        collector: MetricsRecorder | None = None,
    ) -> None:
        self.collector = collector
        self.small, self.large = small, large
        self.gates = list(gates)
        self.verifier = verifier
        self.min_confidence = min_confidence
        self.costs = {"small": 1.0, "large": 10.0, **(cost or {})}
        self.text = text
        self.metrics = RouterMetrics()

    def decide(
        self, request: Any, *, tools: bool = False, risk: bool = False, text: str | None = None
    ) -> RouteDecision:
        """The path for ``request`` (without running it); the gates read ``text`` (default:
        ``self.text(request)``)."""
        if risk:
            return RouteDecision("large", "risk flag")
        text = self.text(request) if text is None else text
        for gate in self.gates:
            decision = gate.decide(text, tools=tools, risk=risk)
            if decision is not None:
                return decision
        return RouteDecision("small", "default")

    def escalates(self, request: Any, answer: Any) -> bool:
        """Whether a small-path ``answer`` is too unsure to keep (the verifier's confidence is
        below ``min_confidence``, or the verifier raised); never without a verifier."""
        if self.verifier is None:
            return False
        try:
            return self.verifier(request, answer) < self.min_confidence
        except Exception as exc:
            self._small_error("the verifier", exc)
            return True

    def _unsure(
        self,
        request: Any,
        result: Any,
        error: Exception | None,
        answer: Callable[[Any], Any] | None,
    ) -> bool:
        """Whether the small path's outcome escalates: it raised, or its answer is unsure."""
        if error is not None:
            self._small_error("the small path", error)
            return True
        return self.escalates(request, answer(result) if answer else result)

    def _small_error(self, what: str, exc: Exception) -> None:
        with self.metrics.lock:
            self.metrics.small_errors += 1
        logger.warning("tokenlean: %s failed (%s: %s); escalating to the large path", what,
                       type(exc).__name__, str(exc)[:200])  # fmt: skip

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

    def _paths(
        self, small: Callable[[Any], Any] | None, large: Callable[[Any], Any] | None
    ) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        small, large = small or self.small, large or self.large
        if small is None or large is None:
            raise ConfigurationError("this router has no paths: give small= and large= per call")
        return small, large

    def run(
        self,
        request: Any,
        *,
        tools: bool = False,
        risk: bool = False,
        text: str | None = None,
        small: Callable[[Any], Any] | None = None,
        large: Callable[[Any], Any] | None = None,
        answer: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Answer ``request`` on the chosen path, escalating when the small answer is unsure.

        Per call, ``small``/``large`` replace the router's paths (an adapter routes each call
        of a framework's model this way), ``text`` is what the gates read, and ``answer``
        turns a path's result into what the verifier scores (default: the result itself)."""
        small_path, large_path = self._paths(small, large)
        decision = self.decide(request, tools=tools, risk=risk, text=text)
        if decision.path == "large":
            result = large_path(request)
            self.record("large")
            return result
        try:
            result, error = small_path(request), None
        except Exception as exc:
            result, error = None, exc
        if self._unsure(request, result, error, answer):
            result = large_path(request)
            self.record("large", escalated=True)
            return result
        self.record("small")
        return result

    async def arun(
        self,
        request: Any,
        *,
        tools: bool = False,
        risk: bool = False,
        text: str | None = None,
        small: Callable[[Any], Any] | None = None,
        large: Callable[[Any], Any] | None = None,
        answer: Callable[[Any], Any] | None = None,
    ) -> Any:
        """:meth:`run` for async paths (returning awaitables; sync ones work too)."""
        small_path, large_path = self._paths(small, large)
        decision = await asyncio.to_thread(self.decide, request, tools=tools, risk=risk, text=text)

        async def call(fn: Callable[[Any], Any]) -> Any:
            result = fn(request)
            return await result if isinstance(result, Awaitable) else result

        if decision.path == "large":
            result = await call(large_path)
            self.record("large")
            return result
        try:
            result, error = await call(small_path), None
        except Exception as exc:
            result, error = None, exc
        if self._unsure(request, result, error, answer):
            result = await call(large_path)
            self.record("large", escalated=True)
            return result
        self.record("small")
        return result
