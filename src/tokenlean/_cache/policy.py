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
    """Second-stage checks that reject a semantic candidate despite high similarity.

    The defaults were chosen on half of the MRPC paraphrase corpus and checked on the other
    half (see docs/caching.md and docs/benchmarks.md): on topically close hard negatives they
    raise precision from 0.71 (cosine alone) to 0.81 at the same duplicate hit rate.
    :meth:`light` keeps only the number and negation checks: more paraphrases hit, more
    near misses get through.
    """

    max_number_differences: int | None = Field(
        default=1,
        ge=0,
        description="Most numbers found in one text but not the other (None: no check).",
    )
    negation: bool = Field(default=True, description="Reject when negation counts differ.")
    entities: bool = Field(
        default=False,
        description="Reject when capitalized names differ (off by default: paraphrases often "
        "rename entities, 'ECB' for 'European Central Bank').",
    )
    min_length_ratio: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Least ratio of the shorter text's word count."
    )
    min_coverage_shorter: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Least share of the shorter text's key terms found in the longer one.",
    )
    min_coverage_longer: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description="Least share of the longer text's key terms found in the shorter one.",
    )

    @classmethod
    def light(cls) -> VerifierConfig:
        """Numbers and negation only."""
        return cls(min_length_ratio=0.0, min_coverage_shorter=0.0, min_coverage_longer=0.0)


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
        threshold: least cosine similarity for a semantic hit (with the verifier on, the
            verifier rather than the threshold decides most cases; see the sweep).
        candidates: nearest neighbours examined per semantic lookup (1: only the nearest,
            which measured best; more lets a verified second neighbour answer).
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
    threshold: float = Field(default=0.70, ge=-1.0, le=1.0)
    candidates: int = Field(default=1, ge=1, le=100)
    verifier: VerifierConfig | None = Field(default_factory=VerifierConfig)
    context_messages: int | None = Field(default=None, ge=0)

    @classmethod
    def exact(cls, **options: object) -> CachePolicy:
        """Answer only identical (canonicalized) requests. The safe default."""
        return cls(mode="exact", **options)  # type: ignore[arg-type]

    @classmethod
    def semantic(cls, threshold: float = 0.70, **options: object) -> CachePolicy:
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
