"""Exporters: OpenTelemetry (``gen_ai.*`` semantic conventions) and Prometheus.

Both receive :class:`RequestRecord` objects from the collector. Neither ever sees prompt text:
records carry counts, durations, model names, the cache layer and hashed tenant labels only.
"""

from __future__ import annotations

import functools
from typing import Any

from tokenlean._errors import MissingDependencyError
from tokenlean._metrics.collector import RequestRecord

__all__ = ["OpenTelemetryExporter", "PrometheusExporter"]

_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)


def _provider(model: str) -> str:
    name = model.lower()
    if name.startswith(("gpt", "o1", "o3", "o4", "text-embedding", "chatgpt")):
        return "openai"
    if name.startswith("claude"):
        return "anthropic"
    return "unknown"


class OpenTelemetryExporter:
    """Records to an OpenTelemetry meter (``opentelemetry-api`` only; the SDK is yours).

    Instruments: ``gen_ai.client.token.usage`` (histogram, ``{token}``, attribute
    ``gen_ai.token.type`` = ``input`` / ``output``), ``gen_ai.client.operation.duration``
    (histogram, seconds), and tokenlean's ``tokenlean.cache.lookups``,
    ``tokenlean.cost`` (USD) and ``tokenlean.tokens.cached_input``. When a span is recording,
    :meth:`annotate_span` adds ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens`` and
    ``gen_ai.usage.cache_read_input_tokens`` to it.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (extra ``otel``).
    """

    def __init__(self, meter: Any = None) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise MissingDependencyError(
                "opentelemetry-api", "otel", "OpenTelemetry export"
            ) from exc
        meter = meter or metrics.get_meter("tokenlean")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(_TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
        self.cache = meter.create_counter("tokenlean.cache.lookups", unit="{lookup}")
        self.cost = meter.create_counter("tokenlean.cost", unit="USD")
        self.cached_input = meter.create_counter("tokenlean.tokens.cached_input", unit="{token}")

    def _attributes(self, record: RequestRecord) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": record.operation,
            "gen_ai.request.model": record.model,
            "gen_ai.provider.name": _provider(record.model),
            "tokenlean.usage.source": record.usage_source,
            "tokenlean.cache.hit": record.cache_hit or "none",
        }
        if record.tenant:
            attributes["tokenlean.tenant"] = record.tenant
        if record.error:
            attributes["error.type"] = record.error
        return attributes

    def record_request(self, record: RequestRecord) -> None:
        attributes = self._attributes(record)
        if record.cache_hit is None:
            self.tokens.record(record.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self.tokens.record(record.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        self.duration.record(record.latency_s, attributes)
        self.cost.add(record.cost.usd, attributes)
        if record.cached_tokens:
            self.cached_input.add(record.cached_tokens, attributes)

    def record_cache(self, layer: str, hit: bool) -> None:
        self.cache.add(1, {"tokenlean.cache.layer": layer, "tokenlean.cache.hit": hit})

    @staticmethod
    def annotate_span(span: Any, record: RequestRecord) -> None:
        """Add the ``gen_ai.usage.*`` attributes of a record to a span."""
        if span is None or not span.is_recording():
            return
        span.set_attribute("gen_ai.request.model", record.model)
        span.set_attribute("gen_ai.usage.input_tokens", record.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", record.output_tokens)
        span.set_attribute("gen_ai.usage.cache_read_input_tokens", record.cached_tokens)


_ACCEPTANCE_FIGURES = (
    "evidence",
    "evidence_wrong",
    "error_estimate",
    "error_upper_bound",
    "cut",
    "explore_probability",
    "serving",
    "calibration_evidence",
    "calibration_overruled",
)


class PrometheusExporter:
    """Records to Prometheus metrics (extra ``prometheus``); serve them with
    ``prometheus_client.start_http_server`` or your framework's exposition endpoint.

    Raises:
        MissingDependencyError: ``prometheus-client`` is not installed.

    Example:
        >>> from prometheus_client import CollectorRegistry
        >>> from tokenlean import MetricsCollector
        >>> registry = CollectorRegistry()  # default: prometheus_client's global registry
        >>> collector = MetricsCollector(sinks=[PrometheusExporter(registry)])
        >>> _ = collector.record_request("gpt-4o", input_tokens=1000, output_tokens=10,
        ...                              latency_s=0.3)
        >>> collector.record_cache("exact", True)
        >>> tokens = {"model": "gpt-4o", "type": "input"}
        >>> registry.get_sample_value("tokenlean_tokens_total", tokens)
        1000.0
        >>> lookups = {"layer": "exact", "hit": "true"}
        >>> registry.get_sample_value("tokenlean_cache_lookups_total", lookups)
        1.0
    """

    def __init__(self, registry: Any = None, *, namespace: str = "tokenlean") -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:
            raise MissingDependencyError(
                "prometheus-client", "prometheus", "Prometheus export"
            ) from exc
        registry = registry if registry is not None else prom.REGISTRY
        self.registry = registry
        counter = functools.partial(prom.Counter, namespace=namespace, registry=registry)
        self.tokens = counter("tokens", "Tokens spent, by type.", ["model", "type"])
        self.requests = counter("requests", "Model calls, by cache outcome.", ["model", "cache"])
        self.cost = counter("cost_usd", "Cost in USD.", ["model", "source"])
        self.duration = prom.Histogram(
            "operation_duration_seconds",
            "Model call duration.",
            ["model"],
            buckets=_DURATION_BUCKETS,
            namespace=namespace,
            registry=registry,
        )
        self.cache = counter(
            "cache_lookups", "Cache lookups, by layer and outcome.", ["layer", "hit"]
        )
        self.acceptance = prom.Gauge(
            "semantic_cache_acceptance",
            "What an error-bounded semantic route has learned, by route and figure "
            "(evidence, evidence_wrong, error_estimate, error_upper_bound, cut, "
            "explore_probability, serving, calibration_evidence, calibration_overruled).",
            ["route", "figure"],
            namespace=namespace,
            registry=registry,
        )

    def record_request(self, record: RequestRecord) -> None:
        self.requests.labels(record.model, record.cache_hit or "none").inc()
        self.tokens.labels(record.model, "input").inc(record.input_tokens)
        self.tokens.labels(record.model, "output").inc(record.output_tokens)
        self.tokens.labels(record.model, "cached_input").inc(record.cached_tokens)
        self.cost.labels(record.model, record.cost.source).inc(record.cost.usd)
        self.duration.labels(record.model).observe(record.latency_s)

    def record_cache(self, layer: str, hit: bool) -> None:
        self.cache.labels(layer, str(hit).lower()).inc()

    def record_cache_acceptance(self, route: str, acceptance: dict[str, Any]) -> None:
        for figure in _ACCEPTANCE_FIGURES:
            value = acceptance.get(figure)
            if value is not None:
                self.acceptance.labels(route, figure).set(float(value))
