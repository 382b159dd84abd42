"""One percentile rule for the figures tokenlean reports from raw samples."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rank_percentile"]


def rank_percentile(ordered: Sequence[float], q: float) -> float:
    """The value at rank ``int(q x n)`` of ``ordered`` (sorted ascending, not empty), clamped to
    the last: the sample itself, never an interpolation.

    Example:
        >>> rank_percentile([1.0, 2.0, 3.0, 4.0], 0.5), rank_percentile([1.0, 2.0], 0.99)
        (3.0, 2.0)
    """
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
