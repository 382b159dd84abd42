"""Cache policies: when a cache may answer, and how sure it must be.

Every cache lookup runs under a :class:`CachePolicy`. ``exact`` (the default) answers only for a
request identical, after canonicalization, to one seen before. ``semantic`` also answers for a
paraphrase of the last user turn in an identical context, when similarity passes the threshold
and the verifier finds no differing number, negation, name or key term. ``off`` never answers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenlean._config import FrozenModel

__all__ = ["CachePolicy", "VerifierConfig"]


class VerifierConfig(FrozenModel):
    """Second-stage checks that reject a semantic candidate despite high similarity."""

    numbers: bool = Field(default=True, description="Reject when the numbers differ.")
    negation: bool = Field(default=True, description="Reject when one text is negated.")
    entities: bool = Field(default=True, description="Reject when the named entities differ.")
    min_term_overlap: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Least share of each text's key terms found in the other.",
    )


class CachePolicy(FrozenModel):
    """How one route or task may use the completion cache.

    Build one with :meth:`exact`, :meth:`semantic` or :meth:`off`.

    Attributes:
        mode: ``"exact"``, ``"semantic"`` or ``"off"``.
        version: part of every key; change it to retire all entries written under the policy.
        ttl_s: seconds an entry lives (None: until evicted or invalidated).
        max_temperature: requests sampling above this temperature bypass the cache, since
            they ask for varied answers; an unspecified temperature counts as allowed.
        allow_high_temperature: cache such requests anyway.
        threshold: least cosine similarity for a semantic hit.
        candidates: nearest neighbours the verifier examines per semantic lookup.
        verifier: the second-stage checks (None: similarity alone decides).
        context_messages: for semantic keys, how many messages before the last user turn
            must match exactly (None: all of them).

    Example:
        >>> CachePolicy.semantic(threshold=0.9).mode
        'semantic'
    """

    mode: Literal["exact", "semantic", "off"] = "exact"
    version: str = "1"
    ttl_s: float | None = Field(default=None, gt=0)
    max_temperature: float = Field(default=0.0, ge=0.0)
    allow_high_temperature: bool = False
    threshold: float = Field(default=0.86, ge=-1.0, le=1.0)
    candidates: int = Field(default=5, ge=1, le=100)
    verifier: VerifierConfig | None = Field(default_factory=VerifierConfig)
    context_messages: int | None = Field(default=None, ge=0)

    @classmethod
    def exact(cls, **options: object) -> CachePolicy:
        """Answer only identical (canonicalized) requests. The safe default."""
        return cls(mode="exact", **options)  # type: ignore[arg-type]

    @classmethod
    def semantic(cls, threshold: float = 0.86, **options: object) -> CachePolicy:
        """Also answer verified paraphrases of the last user turn in the same context."""
        return cls(mode="semantic", threshold=threshold, **options)  # type: ignore[arg-type]

    @classmethod
    def off(cls) -> CachePolicy:
        """Never read or write the cache."""
        return cls(mode="off")

    def bypass_reason(self, temperature: float | None) -> str | None:
        """Why a request at ``temperature`` must bypass the cache, or None if it may use it."""
        if self.mode == "off":
            return "policy is off"
        if (
            temperature is not None
            and temperature > self.max_temperature
            and not self.allow_high_temperature
        ):
            return f"temperature {temperature:g} above the policy's {self.max_temperature:g}"
        return None
