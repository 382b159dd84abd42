"""A variant's figures as the harness adds them up, and the result dictionary they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenlean._stats import rank_percentile

__all__ = ["Tally"]


@dataclass
class Tally:
    """One variant's running figures, and the result they make."""

    successes: int = 0
    tasks: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cache_hits: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    by_size: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def result(self) -> dict[str, Any]:
        def pct(ordered: list[float], q: float) -> float:
            return round(rank_percentile(ordered, q), 1)

        lat = sorted(self.latencies) or [0.0]
        return {
            "tasks": self.tasks,
            "success_rate": round(self.successes / self.tasks, 4),
            "input_tokens_per_task": round(self.input_tokens / self.tasks, 1),
            "output_tokens_per_task": round(self.output_tokens / self.tasks, 1),
            "cost_per_success": round(self.cost / self.successes, 7) if self.successes else None,
            "latency_ms_p50": pct(lat, 0.5),
            "latency_ms_p95": pct(lat, 0.95),
            "latency_ms_p99": pct(lat, 0.99),
            "cache_hit_rate": round(self.cache_hits / self.tasks, 4),
            "failures": dict(sorted(self.failures.items())),
            "prefix_cached_share": round(self.cached_input_tokens / self.input_tokens, 4)
            if self.input_tokens
            else 0.0,
            "model_calls_per_task": round(self.model_calls / self.tasks, 3),
            "latency_by_prompt_size": {
                bucket: {"p50_ms": pct(v, 0.5), "p95_ms": pct(v, 0.95), "calls": len(v)}
                for bucket, v in sorted((b, sorted(v)) for b, v in self.by_size.items())
            },
            "latency_ms_percentiles": [pct(lat, q / 100) for q in range(101)],
            **self.extra,
        }
