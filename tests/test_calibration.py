"""Calibration of estimates against provider-reported usage."""

from __future__ import annotations

import threading

import pytest

import tokenlean as tl


def test_ratio_and_error_are_tracked_per_model_and_overall() -> None:
    """The ratio is reported/estimated summed; the error is the mean per request."""
    calibration = tl.UsageCalibration()
    calibration.record(estimated=100, reported=110, model="claude")
    calibration.record(estimated=100, reported=130, model="claude")
    calibration.record(estimated=50, reported=50, model="gpt-4")
    assert calibration.ratio("claude") == pytest.approx(1.2)
    assert calibration.ratio("gpt-4") == 1.0
    assert calibration.ratio() == pytest.approx(290 / 250)
    stats = calibration.snapshot()["claude"]
    assert stats.samples == 2
    assert stats.mean_abs_error_pct == pytest.approx((10 / 110 + 30 / 130) / 2 * 100)
    assert calibration.adjust(1000, model="claude") == 1200


def test_no_data_means_no_correction() -> None:
    """Before any record the ratio is 1.0 and estimates pass through."""
    calibration = tl.UsageCalibration()
    assert calibration.ratio("anything") == 1.0
    assert calibration.adjust(42) == 42


@pytest.mark.parametrize(("estimated", "reported"), [(-1, 5), (5, -1), (1.5, 2), (True, 2)])
def test_invalid_counts_are_rejected_and_nothing_is_recorded(
    estimated: object, reported: object
) -> None:
    """Negative or non-integer counts raise InvalidInputError and leave the stats intact."""
    calibration = tl.UsageCalibration()
    calibration.record(estimated=10, reported=11)
    with pytest.raises(tl.InvalidInputError):
        calibration.record(estimated=estimated, reported=reported)  # type: ignore[arg-type]
    assert calibration.snapshot()["*"].samples == 1


def test_recording_from_many_threads_loses_nothing() -> None:
    """Concurrent records all count."""
    calibration = tl.UsageCalibration()

    def work() -> None:
        for _ in range(1000):
            calibration.record(estimated=10, reported=11, model="m")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calibration.snapshot()["m"].samples == 8000
    assert calibration.snapshot()["m"].reported_tokens == 88000
