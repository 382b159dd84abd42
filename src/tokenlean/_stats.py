"""The percentile rules of the figures tokenlean reports from raw samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["p95", "rank_percentile"]


def rank_percentile(ordered: Sequence[float], q: float) -> float:
    """The value at rank ``int(q x n)`` of ``ordered`` (sorted ascending, not empty), clamped to
    the last: the sample itself, never an interpolation.

    Example:
        >>> rank_percentile([1.0, 2.0, 3.0, 4.0], 0.5), rank_percentile([1.0, 2.0], 0.99)
        (3.0, 2.0)
    """
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p95(values: Sequence[float]) -> float:
    """The 95th percentile the component benchmarks report (``statistics.quantiles``, exclusive
    method, which extrapolates past the largest of very few samples); a single sample is its
    own percentile.

    Example:
        >>> p95([4.0]), round(p95([1.0, 2.0]), 2)
        (4.0, 2.85)
    """
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20)[18]
