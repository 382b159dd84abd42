"""The metrics collector: cheap to record, safe under threads and asyncio, JSON snapshots.

Recording a request updates counters and fixed-bucket histograms under one short lock (no I/O
while held) and then hands the record to the sinks (OpenTelemetry, Prometheus), which do their
own thread-safe aggregation. The four headline metrics:

- **cache hit rate** per layer (``exact``, ``semantic``, ``retrieval``, ``provider_prefix``): of
  the lookups that reached a layer, the share it served (a semantic lookup first misses the
  exact layer, so ``exact`` counts every completion-cache lookup);
- **effective tokens per task**: input + output tokens divided by completed tasks;
- **p95 latency by prompt-size bucket**;
- **quality-adjusted cost**: cost per accepted outcome.

Secondary: prompt-length percentiles, retrieval payload size, summary compression ratio, batch
fill rate, escalation rate, and provider-reported cached input tokens against our estimate.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tokenlean._metrics.prices import Cost, PriceTable
from tokenlean._metrics.redaction import hash_label

__all__ = [
    "Histogram",
    "MetricsCollector",
    "MetricsRecorder",
    "MetricsSink",
    "RequestRecord",
    "prompt_bucket",
]

logger = logging.getLogger("tokenlean.metrics")

_FINISHED_KEPT = 65_536  # finished tasks remembered for a late accept()

PROMPT_BUCKETS = (1000, 4000, 16000)  # tokens: <1k, 1k-4k, 4k-16k, 16k+
_LATENCY_EDGES = tuple(round(1.25**i, 4) for i in range(-10, 60))  # ms, log-spaced
_TOKEN_EDGES = tuple(int(1.3**i) for i in range(1, 50))


class Histogram:
    """Fixed-edge histogram with approximate percentiles (upper edge of the bucket)."""

    __slots__ = ("counts", "edges", "n", "total")

    def __init__(self, edges: tuple[float, ...]) -> None:
        self.edges = edges
        self.counts = [0] * (len(edges) + 1)
        self.total = 0.0
        self.n = 0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += 1
        self.total += value
        self.n += 1

    def percentile(self, q: float) -> float:
        if not self.n:
            return 0.0
        target, seen = q * self.n, 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= target:
                return float(self.edges[min(index, len(self.edges) - 1)])
        return float(self.edges[-1])

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0


@dataclass(frozen=True)
class RequestRecord:
    """One model call as the sinks see it. No prompt text, ever."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    latency_s: float
    cost: Cost
    usage_source: Literal["provider", "estimate"]
    cache_hit: str | None
    estimated_input_tokens: int | None
    tenant: str | None
    operation: str = "chat"
    error: str | None = None


class MetricsSink(Protocol):
    """The exporters' port: receives every record a :class:`MetricsCollector` makes.

    A sink may also define ``record_cache_acceptance(route, acceptance)`` to receive what
    error-bounded semantic routes have learned (the Prometheus exporter does)."""

    def record_request(self, record: RequestRecord) -> None: ...

    def record_cache(self, layer: str, hit: bool) -> None: ...


class MetricsRecorder(Protocol):
    """The components' port: everything the caches, memory, retriever, batcher, router and the
    adapters call on their ``collector``. :class:`MetricsCollector` is the implementation;
    a replacement (another metrics system) implements these methods."""

    def record_request(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        latency_s: float,
        cached_tokens: int = 0,
        usage_source: Literal["provider", "estimate"] = "provider",
        estimated_input_tokens: int | None = None,
        estimated_cached_tokens: int | None = None,
        cache_hit: str | None = None,
        tenant: str | None = None,
        task: str | None = None,
        operation: str = "chat",
        error: str | None = None,
    ) -> Any:
        """One model call (a cache hit spends no tokens)."""

    def record_cache(self, layer: str, hit: bool) -> None:
        """One lookup of a cache layer."""

    def record_store_error(self, layer: str) -> None:
        """One store fault a cache layer went on without (a lookup missed, a write dropped)."""

    def record_cache_acceptance(self, route: str, acceptance: dict[str, Any]) -> None:
        """An error-bounded semantic route's latest learned state."""

    def record_retrieval(self, payload_tokens: int) -> None:
        """The tokens of one retrieved payload."""

    def record_summary(self, original_tokens: int, summary_tokens: int) -> None:
        """One summary update: the tokens it read and the tokens it wrote."""

    def record_batch(self, fill_rate: float) -> None:
        """One flushed batch's fill rate."""

    def record_routing(self, escalated: bool) -> None:
        """One routed request, and whether it escalated."""


def prompt_bucket(tokens: int) -> str:
    """The prompt-size bucket of ``tokens``: ``<1k``, ``1k-4k``, ``4k-16k`` or ``16k+``."""
    labels = ("<1k", "1k-4k", "4k-16k", "16k+")
    return labels[bisect.bisect_right(PROMPT_BUCKETS, tokens)]


@dataclass
class _Task:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    accepted: bool = False


@dataclass
class _State:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_estimated_usd: float = 0.0
    cache: dict[str, list[int]] = field(default_factory=dict)  # layer -> [hits, lookups]
    latency_by_bucket: dict[str, Histogram] = field(default_factory=dict)
    prompt_tokens: Histogram = field(default_factory=lambda: Histogram(_TOKEN_EDGES))
    retrieval_tokens: Histogram = field(default_factory=lambda: Histogram(_TOKEN_EDGES))
    # The most recent 10,000 of each (bounded: a long-running service must not grow).
    compression: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    batch_fill: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    routed: deque[bool] = field(default_factory=lambda: deque(maxlen=10_000))
    reported_cached: int = 0
    estimated_cached: int = 0
    tasks_done: int = 0
    tasks_accepted: int = 0
    task_tokens: int = 0
    task_cost: float = 0.0


class MetricsCollector:
    """Collects token-efficiency metrics. Thread- and asyncio-safe; records in microseconds.

    Args:
        prices: the price table (default: :meth:`PriceTable.default`).
        sinks: exporters receiving every record.
        hash_salt: salt of the hashed tenant labels.

    Example:
        >>> collector = MetricsCollector()
        >>> with collector.task("ticket-1") as task:
        ...     _ = collector.record_request("gpt-4o-mini", input_tokens=1200, output_tokens=80,
        ...                                  latency_s=0.4, task=task)
        ...     collector.accept(task)
        >>> round(collector.snapshot()["headline"]["effective_tokens_per_task"])
        1280
    """

    def __init__(
        self,
        *,
        prices: PriceTable | None = None,
        sinks: list[MetricsSink] | None = None,
        hash_salt: str = "tokenlean",
    ) -> None:
        self.prices = prices or PriceTable.default()
        self.sinks = list(sinks or [])
        self.hash_salt = hash_salt
        self._lock = threading.Lock()
        self._state = _State()
        self._tasks: dict[str, _Task] = {}
        self._finished: OrderedDict[str, bool] = OrderedDict()  # recent tasks: accepted yet?
        self._acceptance: dict[str, dict[str, Any]] = {}
        self._store_errors: dict[str, int] = {}  # cache layer -> store faults
        self._unpriced: set[str] = set()

    # ------------------------------------------------------------------ recording

    def record_request(
        self,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        latency_s: float,
        cached_tokens: int = 0,
        usage_source: Literal["provider", "estimate"] = "provider",
        estimated_input_tokens: int | None = None,
        estimated_cached_tokens: int | None = None,
        cache_hit: str | None = None,
        tenant: str | None = None,
        task: str | None = None,
        operation: str = "chat",
        error: str | None = None,
    ) -> RequestRecord:
        """Record one model call. A call served by a cache (``cache_hit`` = the layer) costs
        nothing and spends no tokens; its latency still counts."""
        if cache_hit is not None:
            input_tokens = output_tokens = cached_tokens = 0
        cost = self.prices.cost(
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            source=usage_source,
        )
        if not cost.priced and cache_hit is None and model not in self._unpriced:
            with self._lock:
                new = model not in self._unpriced
                self._unpriced.add(model)
            if new:
                logger.warning(
                    "tokenlean: no price for model %r: its calls cost 0 in the figures; add it to "
                    "a price file (PriceTable.from_file) or the table given to the collector",
                    model,
                )
        tenant_label = hash_label(tenant, self.hash_salt) if tenant else None
        record = RequestRecord(
            model,
            input_tokens,
            output_tokens,
            cached_tokens,
            latency_s,
            cost,
            usage_source,
            cache_hit,
            estimated_input_tokens,
            tenant_label,
            operation,
            error,
        )
        prompt = estimated_input_tokens if estimated_input_tokens is not None else input_tokens
        with self._lock:
            s = self._state
            s.requests += 1
            s.errors += int(error is not None)
            s.input_tokens += input_tokens
            s.output_tokens += output_tokens
            s.cost_usd += cost.usd
            if usage_source == "estimate":
                s.cost_estimated_usd += cost.usd
            bucket = prompt_bucket(prompt)
            histogram = s.latency_by_bucket.get(bucket)
            if histogram is None:
                histogram = s.latency_by_bucket[bucket] = Histogram(_LATENCY_EDGES)
            histogram.add(latency_s * 1000)
            s.prompt_tokens.add(prompt)
            if estimated_cached_tokens is not None and usage_source == "provider":
                s.reported_cached += cached_tokens
                s.estimated_cached += estimated_cached_tokens
            if task is not None and task in self._tasks:
                t = self._tasks[task]
                t.input_tokens += input_tokens
                t.output_tokens += output_tokens
                t.cost += cost.usd
        for sink in self.sinks:
            sink.record_request(record)
        return record

    def record_cache(self, layer: str, hit: bool) -> None:
        """Record one cache lookup of a layer (``exact``, ``semantic``, ``retrieval``,
        ``provider_prefix``)."""
        with self._lock:
            counts = self._state.cache.setdefault(layer, [0, 0])
            counts[0] += int(hit)
            counts[1] += 1
        for sink in self.sinks:
            sink.record_cache(layer, hit)

    def record_store_error(self, layer: str) -> None:
        """Record one store fault a cache layer went on without (the lookup was a miss, the
        write was dropped); shown as ``cache_store_errors`` by layer. Sinks with a
        ``record_store_error`` method receive it too."""
        with self._lock:
            self._store_errors[layer] = self._store_errors.get(layer, 0) + 1
        for sink in self.sinks:
            forward = getattr(sink, "record_store_error", None)
            if forward is not None:
                forward(layer)

    def record_cache_acceptance(self, route: str, acceptance: dict[str, Any]) -> None:
        """Record what an error-bounded semantic route has learned (its latest state: evidence,
        error estimate and bound, acceptance cut, exploration probability); sinks with a
        ``record_cache_acceptance`` method receive it too."""
        with self._lock:
            self._acceptance[route] = dict(acceptance)
        for sink in self.sinks:
            forward = getattr(sink, "record_cache_acceptance", None)
            if forward is not None:
                forward(route, acceptance)

    def record_retrieval(self, payload_tokens: int) -> None:
        with self._lock:
            self._state.retrieval_tokens.add(payload_tokens)

    def record_summary(self, original_tokens: int, summary_tokens: int) -> None:
        if summary_tokens > 0:
            with self._lock:
                self._state.compression.append(original_tokens / summary_tokens)

    def record_batch(self, fill_rate: float) -> None:
        with self._lock:
            self._state.batch_fill.append(fill_rate)

    def record_routing(self, escalated: bool) -> None:
        with self._lock:
            self._state.routed.append(escalated)

    # ------------------------------------------------------------------ tasks

    @contextmanager
    def task(self, task_id: str) -> Iterator[str]:
        """Mark a task's boundaries; requests recorded with ``task=`` count towards it."""
        with self._lock:
            self._tasks[task_id] = _Task()
        try:
            yield task_id
        finally:
            self.finish(task_id)

    def accept(self, task_id: str) -> None:
        """Report that the task's outcome was accepted (for cost per accepted outcome), while
        the task runs or after it (the last 65,536 finished tasks are remembered). A task is
        counted once however often it is accepted; an unknown task is logged and ignored."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is not None:
                already, task.accepted = task.accepted, True
            elif task_id in self._finished:
                already, self._finished[task_id] = self._finished[task_id], True
            else:
                logger.warning("tokenlean: accept() of an unknown task %r ignored", task_id)
                return
            self._state.tasks_accepted += 0 if already else 1

    def finish(self, task_id: str) -> None:
        with self._lock:
            task = self._tasks.pop(task_id, None)
            if task is None:
                return
            self._finished[task_id] = task.accepted
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.popitem(last=False)
            self._state.tasks_done += 1
            self._state.task_tokens += task.input_tokens + task.output_tokens
            self._state.task_cost += task.cost

    # ------------------------------------------------------------------ reading

    def summary(self) -> str:
        """The snapshot as text a person reads (see :func:`tokenlean.render_summary`)."""
        from tokenlean._metrics.summary import render_summary

        return render_summary(self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        """Every figure, JSON-ready."""
        with self._lock:
            s = self._state
            cache = {
                layer: {"hits": h, "lookups": n, "hit_rate": round(h / n, 4) if n else 0.0}
                for layer, (h, n) in s.cache.items()
            }
            latency = {
                b: {"p50_ms": h.percentile(0.5), "p95_ms": h.percentile(0.95), "n": h.n}
                for b, h in sorted(s.latency_by_bucket.items())
            }
            return {
                "headline": {
                    "cache_hit_rate": cache,
                    "effective_tokens_per_task": s.task_tokens / s.tasks_done
                    if s.tasks_done
                    else 0.0,
                    "latency_by_prompt_size": latency,
                    "cost_per_accepted_outcome_usd": (
                        s.task_cost / s.tasks_accepted if s.tasks_accepted else None
                    ),
                },
                "totals": {
                    "requests": s.requests,
                    "errors": s.errors,
                    "input_tokens": s.input_tokens,
                    "output_tokens": s.output_tokens,
                    "cost_usd": round(s.cost_usd, 8),
                    "cost_from_estimates_usd": round(s.cost_estimated_usd, 8),
                    "tasks_done": s.tasks_done,
                    "tasks_accepted": s.tasks_accepted,
                    "unpriced_models": sorted(self._unpriced),
                },
                "semantic_cache": {route: dict(a) for route, a in self._acceptance.items()},
                "cache_store_errors": dict(sorted(self._store_errors.items())),
                "secondary": {
                    "prompt_tokens_p50": s.prompt_tokens.percentile(0.5),
                    "prompt_tokens_p95": s.prompt_tokens.percentile(0.95),
                    "retrieval_payload_tokens_mean": round(s.retrieval_tokens.mean, 1),
                    "summary_compression_ratio": round(sum(s.compression) / len(s.compression), 2)
                    if s.compression
                    else None,
                    "batch_fill_rate": round(sum(s.batch_fill) / len(s.batch_fill), 3)
                    if s.batch_fill
                    else None,
                    "escalation_rate": round(sum(s.routed) / len(s.routed), 4)
                    if s.routed
                    else None,
                    "cached_input_tokens_reported": s.reported_cached,
                    "cached_input_tokens_estimated": s.estimated_cached,
                },
            }
