"""Calibration: how far tokenlean's token estimates are from what the provider bills.

Record each request's estimated prompt tokens next to the provider-reported usage; the running
ratio tells how much to trust (or scale) an estimate, per model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tokenlean._errors import InvalidInputError

__all__ = ["CalibrationStats", "UsageCalibration"]


@dataclass(frozen=True)
class CalibrationStats:
    """Calibration of one model (or of all models, under the key ``"*"``).

    Attributes:
        samples: requests recorded.
        estimated_tokens: sum of tokenlean's estimates.
        reported_tokens: sum of provider-reported tokens.
        ratio: ``reported_tokens / estimated_tokens`` (1.0 is a perfect estimate).
        mean_abs_error_pct: mean of ``|reported - estimated| / reported`` per request, in percent.
    """

    samples: int
    estimated_tokens: int
    reported_tokens: int
    ratio: float
    mean_abs_error_pct: float


class _Running:
    __slots__ = ("abs_error_pct", "estimated", "reported", "samples")

    def __init__(self) -> None:
        self.samples = 0
        self.estimated = 0
        self.reported = 0
        self.abs_error_pct = 0.0

    def add(self, estimated: int, reported: int) -> None:
        self.samples += 1
        self.estimated += estimated
        self.reported += reported
        if reported:
            self.abs_error_pct += abs(reported - estimated) / reported * 100

    def stats(self) -> CalibrationStats:
        ratio = self.reported / self.estimated if self.estimated else 1.0
        return CalibrationStats(
            self.samples,
            self.estimated,
            self.reported,
            ratio,
            self.abs_error_pct / self.samples if self.samples else 0.0,
        )


class UsageCalibration:
    """Running comparison of estimated and provider-reported token counts. Thread-safe.

    Example:
        >>> calibration = UsageCalibration()
        >>> calibration.record(estimated=100, reported=110, model="claude-sonnet-4-5")
        >>> calibration.ratio("claude-sonnet-4-5")
        1.1
        >>> calibration.adjust(200, model="claude-sonnet-4-5")
        220
    """

    ALL = "*"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, _Running] = {}

    def record(self, *, estimated: int, reported: int, model: str | None = None) -> None:
        """Record one request's estimate and the provider's reported count.

        Raises:
            InvalidInputError: a count is negative or not an integer.
        """
        for label, value in (("estimated", estimated), ("reported", reported)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"{label} must be a non-negative integer, got {value!r}")
        with self._lock:
            for key in {self.ALL, model or self.ALL}:
                self._by_model.setdefault(key, _Running()).add(estimated, reported)

    def ratio(self, model: str | None = None) -> float:
        """``reported / estimated`` for ``model`` (all models when None); 1.0 before any data."""
        with self._lock:
            running = self._by_model.get(model or self.ALL)
            return running.stats().ratio if running else 1.0

    def adjust(self, estimated: int, *, model: str | None = None) -> int:
        """Scale an estimate by the model's observed ratio."""
        return round(estimated * self.ratio(model))

    def snapshot(self) -> dict[str, CalibrationStats]:
        """Statistics per model, and for all models under ``"*"``."""
        with self._lock:
            return {key: running.stats() for key, running in self._by_model.items()}
