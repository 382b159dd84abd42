"""The harness's own levers: the customer slots the memory extracts, and a router gate that
learns from escalations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from tokenlean._memory.slots import RegexExtractor
from tokenlean._routing.gates import LearnedGate, RouteDecision

__all__ = ["EXTRACTORS", "Customer", "EscalationGate"]


class Customer(BaseModel):
    """The slots the memory keeps for a customer of the generated workload."""

    delivery_city: str | None = None
    purchased_product: str | None = None


EXTRACTORS = [
    RegexExtractor("delivery_city", r"deliver my orders to ([A-Z][a-z]+)"),
    RegexExtractor("purchased_product", r"I bought the ([A-Z][a-z]+ [a-z]+)"),
]


class EscalationGate:
    """A router gate that learns from escalations: every small-path answer is an example
    (escalated or not) for a :class:`LearnedGate`, retrained after each wave; until it has seen
    both outcomes it makes no decision (the router then tries the small model). A wave's
    decisions are made up front with one embedding call (:meth:`prepare`), so routing does not
    stagger the requests that the batcher should group."""

    def __init__(self, embedder: Any) -> None:
        self.gate = LearnedGate(embedder, k=3, threshold=0.34)
        self.examples: dict[str, bool] = {}
        self.trained = False
        self.decisions: dict[str, RouteDecision] = {}

    def learn(self, text: str, escalated: bool) -> None:
        self.examples[text] = escalated

    def retrain(self) -> None:
        if len(set(self.examples.values())) == 2:
            self.gate.train(list(self.examples), list(self.examples.values()))
            self.trained = True

    def prepare(self, texts: Sequence[str]) -> None:
        self.decisions = {}
        if not self.trained or not texts:
            return
        for text, p in zip(texts, self.gate.probabilities_large(texts), strict=True):
            path: Literal["small", "large"] = "large" if p >= self.gate.threshold else "small"
            self.decisions[text] = RouteDecision(path, f"learned gate p(large)={p:.2f}", p)

    def decide(self, text: str, **_: Any) -> RouteDecision | None:
        if not self.trained:
            return None
        return self.decisions.get(text) or self.gate.decide(text)
