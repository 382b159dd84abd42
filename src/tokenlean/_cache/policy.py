"""Cache policies: when a cache may answer, and how sure it must be.

Every cache lookup runs under a :class:`CachePolicy`. ``exact`` (the default) answers only for a
request identical, after canonicalization, to one seen before. ``semantic`` also answers for a
paraphrase of the compared part of a request (by default the question slot of the last user
turn) when everything else matches exactly, and only where the route's own evidence bounds the
error rate of served hits by ``max_error_rate`` (see :mod:`tokenlean._cache.acceptance`). A
semantic policy given a fixed ``threshold`` instead serves every candidate at or above it that
the verifier does not reject (the older, static rule). ``off`` never answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

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
        max_error_rate: the error budget of a semantic route: the most share of served
            semantic hits that may be wrong. None: the static rule (``threshold`` and
            ``verifier``).
        confidence: confidence level of the error rate's upper bound.
        monitor_rate: least share of would-be semantic hits still checked against the model.
        min_similarity: candidates below this cosine are plain misses and teach nothing.
        evidence_window: most evidence rows a route keeps (oldest dropped first).
        threshold: the static rule's least cosine similarity.
        candidates: nearest neighbours examined per semantic lookup.
        verifier: the static rule's second-stage checks (None: similarity alone decides);
            the error-bounded rule uses the same checks as graded inputs of its model.
        context_messages: for semantic keys, how many messages before the last user turn
            must match exactly (None: all of them).
        compare: the splitter choosing what is compared (see :mod:`tokenlean._cache.compare`;
            None: a :class:`TemplateSplitter` learned from this policy's requests).

    Example:
        >>> CachePolicy.semantic().max_error_rate
        0.05
        >>> CachePolicy.semantic(threshold=0.9).max_error_rate is None
        True
    """

    mode: Literal["exact", "semantic", "off"] = "exact"
    version: str = "1"
    ttl_s: float | None = Field(default=None, gt=0)
    max_temperature: float = Field(default=0.0, ge=0.0)
    allow_high_temperature: bool = False
    max_error_rate: float | None = Field(default=0.05, gt=0.0, lt=1.0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    monitor_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0)
    evidence_window: int = Field(default=8192, ge=64)
    threshold: float = Field(default=0.70, ge=-1.0, le=1.0)
    candidates: int = Field(default=1, ge=1, le=100)
    verifier: VerifierConfig | None = Field(default_factory=VerifierConfig)
    context_messages: int | None = Field(default=None, ge=0)
    compare: Any = Field(default=None, exclude=True, repr=False)

    @field_validator("compare")
    @classmethod
    def _callable(cls, value: Any) -> Any:
        if value is not None and not callable(value):
            raise ValueError("compare must be a callable (request) -> (fixed, compared) | None")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if self.mode == "semantic" and self.compare is None:
            from tokenlean._cache.compare import TemplateSplitter

            object.__setattr__(
                self, "compare", TemplateSplitter(context_messages=self.context_messages)
            )

    @classmethod
    def exact(cls, **options: object) -> CachePolicy:
        """Answer only identical (canonicalized) requests. The safe default."""
        return cls(mode="exact", **options)  # type: ignore[arg-type]

    @classmethod
    def semantic(
        cls, max_error_rate: float = 0.05, *, threshold: float | None = None, **options: object
    ) -> CachePolicy:
        """Also answer paraphrases of the compared part of a request, everything else equal.

        By default the route serves a semantic hit only where its own evidence bounds the
        error rate of served hits by ``max_error_rate``; until then it serves exact hits only
        and learns. Give ``threshold`` for the static rule instead (a fixed cosine threshold
        and the verifier's vetoes, no error bound).
        """
        if threshold is not None:
            return cls(mode="semantic", threshold=threshold, max_error_rate=None, **options)  # type: ignore[arg-type]
        return cls(mode="semantic", max_error_rate=max_error_rate, **options)  # type: ignore[arg-type]

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
