"""The overhead benchmark reports its documented key."""

from __future__ import annotations

from tokenlean.bench._overhead import overhead_bench


def test_overhead_benchmark_reports_the_median_record_cost() -> None:
    """record_us_p50 is a positive number of microseconds."""
    result = overhead_bench(reps=200)
    assert result["record_us_p50"] > 0
    assert result["record_with_otel_us_p50"] is None or result["record_with_otel_us_p50"] > 0
