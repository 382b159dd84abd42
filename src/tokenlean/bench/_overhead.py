"""``tokenlean bench overhead``: what recording one request into the collector costs.

Median over many calls of ``MetricsCollector.record_request`` with no exporter, and with the
OpenTelemetry exporter on the SDK's in-memory reader (when the SDK is installed).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from tokenlean._metrics.collector import MetricsCollector, MetricsSink

__all__ = ["overhead_bench"]


def _median_us(collector: MetricsCollector, reps: int) -> float:
    times = []
    for i in range(reps):
        start = time.perf_counter_ns()
        collector.record_request(
            "gpt-4o-mini",
            input_tokens=1200 + i % 50,
            output_tokens=80,
            latency_s=0.42,
            cached_tokens=512,
            tenant="acme",
        )
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def overhead_bench(reps: int = 20_000) -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    result: dict[str, Any] = {
        "reps": reps,
        "record_us_p50": round(_median_us(MetricsCollector(), reps), 2),
    }
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from tokenlean._metrics.exporters import OpenTelemetryExporter

        meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench")
        sinks: list[MetricsSink] = [OpenTelemetryExporter(meter)]
        result["record_with_otel_us_p50"] = round(
            _median_us(MetricsCollector(sinks=sinks), reps), 2
        )
    except ImportError:
        result["record_with_otel_us_p50"] = None
    return result
