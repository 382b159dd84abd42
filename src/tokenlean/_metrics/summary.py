"""A metrics snapshot as text a person reads: the headline figures first, then the totals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["render_summary"]


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.6f}"


def render_summary(snapshot: Mapping[str, Any]) -> str:
    """:meth:`MetricsCollector.snapshot`'s figures as aligned lines of text.

    Example:
        >>> from tokenlean import MetricsCollector
        >>> collector = MetricsCollector()
        >>> _ = collector.record_request("gpt-4o-mini", input_tokens=1200, output_tokens=80,
        ...                              latency_s=0.4)
        >>> collector.record_cache("exact", True)
        >>> print(render_summary(collector.snapshot()))  # doctest: +ELLIPSIS
        requests                 1 (0 errors)
        tokens                   1,200 in, 80 out
        cost                     $0.000228
        cache hit rate           exact 100.0% of 1
        ...
    """
    totals = snapshot.get("totals", {})
    headline = snapshot.get("headline", {})
    lines = [
        ("requests", f"{totals.get('requests', 0):,} ({totals.get('errors', 0):,} errors)"),
        (
            "tokens",
            f"{totals.get('input_tokens', 0):,} in, {totals.get('output_tokens', 0):,} out",
        ),
        ("cost", _money(totals.get("cost_usd"))),
    ]
    cache = headline.get("cache_hit_rate") or {}
    lines.append(
        (
            "cache hit rate",
            ", ".join(
                f"{layer} {figures['hit_rate']:.1%} of {figures['lookups']:,}"
                for layer, figures in cache.items()
            )
            or "no lookups recorded",
        )
    )
    tasks = totals.get("tasks_done", 0)
    per_task = headline.get("effective_tokens_per_task")
    lines.append(
        (
            "tokens per task",
            f"{per_task:,.0f} over {tasks:,} tasks" if tasks else "no tasks recorded",
        )
    )
    lines.append(("cost per accepted", _money(headline.get("cost_per_accepted_outcome_usd"))))
    for bucket, figures in (headline.get("latency_by_prompt_size") or {}).items():
        lines.append(
            (
                f"latency {bucket}",
                f"p50 {figures['p50_ms']:,.0f} ms, p95 {figures['p95_ms']:,.0f} ms "
                f"({figures['n']:,} calls)",
            )
        )
    unpriced = totals.get("unpriced_models") or []
    if unpriced:
        lines.append(("unpriced models", ", ".join(unpriced) + " (counted at $0)"))
    for route, acceptance in (snapshot.get("semantic_cache") or {}).items():
        bound = acceptance.get("error_upper_bound")
        serving = "serving" if acceptance.get("serving") else "exact hits only"
        lines.append(
            (
                f"semantic route {route or 'default'}",
                f"{serving}; {acceptance.get('evidence', 0):,} rows, error bound "
                + (f"{bound:.1%}" if isinstance(bound, float) else "n/a")
                + f" (budget {acceptance.get('max_error_rate', 'n/a')})",
            )
        )
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}} {value}".rstrip() for label, value in lines)
