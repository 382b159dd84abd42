"""The harness's HTML report: one self-contained page with tables and SVG bar charts.

Every chart is sized from its own text: the label column from the longest variant name, the
room after the bars from the longest value, so no label or figure is ever clipped. Figures are
formatted for reading: tokens and milliseconds as whole numbers with thousands separators,
costs in dollars, failures as a list ("none" when there are none).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["format_cost", "format_failures", "text_width", "write_report"]

_COLORS = {
    "baseline": "#9e9e9e",
    "cached": "#64b5f6",
    "summarized_retrieved": "#81c784",
    "all_levers": "#ffb74d",
}
CHAR_EM = 0.65
"""Width of one character in ems, generous for a sans-serif font (wide letters included)."""
_BAR_AREA = 340  # px of the longest bar
_GAP = 10


def text_width(text: str, font_size: float) -> float:
    """An upper estimate of the rendered width of ``text`` in pixels."""
    return len(text) * font_size * CHAR_EM


def format_cost(usd: float | None) -> str:
    """A cost in dollars, with enough digits for fractions of a cent: ``$0.001448``."""
    if usd is None:
        return "-"
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.6f}"


def format_failures(failures: Mapping[str, int]) -> str:
    """Failure kinds and counts, most frequent first: ``wrong_fact 3, stale 1``, or ``none``."""
    ordered = sorted(failures.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{kind} {count:,}" for kind, count in ordered) or "none"


def _svg(width: float, height: float, body: str, title: str) -> str:
    return (
        f"<h3>{html.escape(title)}</h3><svg width='{int(width) + 1}' height='{int(height)}' "
        f"viewBox='0 0 {int(width) + 1} {int(height)}' font-family='sans-serif' "
        f"xmlns='http://www.w3.org/2000/svg'>{body}</svg>"
    )


def _bars(title: str, values: dict[str, float], show: Callable[[float], str]) -> str:
    """Horizontal bars, one per variant, each followed by its value as ``show`` writes it."""
    row, size = 28, 12
    label_w = max((text_width(name, size) for name in values), default=0) + _GAP
    value_w = max((text_width(show(v), size) for v in values.values()), default=0) + _GAP
    top = max(values.values(), default=0) or 1
    rows = []
    for i, (name, value) in enumerate(values.items()):
        length = int(_BAR_AREA * max(value, 0) / top)
        y = i * row + 10
        color = _COLORS.get(name, "#888")
        rows.append(
            f"<text x='0' y='{y + 14}' font-size='{size}'>{html.escape(name)}</text>"
            f"<rect x='{label_w:.0f}' y='{y}' width='{length}' height='18' fill='{color}'/>"
            f"<text x='{label_w + length + 5:.0f}' y='{y + 14}' font-size='{size}'>"
            f"{html.escape(show(value))}</text>"
        )
    width = label_w + _BAR_AREA + 5 + value_w
    return _svg(width, len(values) * row + 16, "".join(rows), title)


def _cdf(title: str, series: dict[str, list[float]]) -> str:
    """Latency distributions as cumulative curves: x is latency (ms), y the share of tasks."""
    height, left, bottom, size = 260, 50, 30, 12
    plot_w, plot_h = 380, height - bottom - 10
    legend_w = max((text_width(name, size) for name in series), default=0) + _GAP
    width = left + plot_w + 10 + legend_w
    top = max((max(v) for v in series.values() if v), default=0) or 1
    top_label = f"{top:,.0f} ms"
    parts = [
        f"<line x1='{left}' y1='{10 + plot_h}' x2='{left + plot_w}' y2='{10 + plot_h}' "
        "stroke='#444'/>",
        f"<line x1='{left}' y1='10' x2='{left}' y2='{10 + plot_h}' stroke='#444'/>",
        f"<text x='{left}' y='{height - 5}' font-size='11'>0 ms</text>",
        f"<text x='{left + plot_w - text_width(top_label, 11):.0f}' y='{height - 5}' "
        f"font-size='11'>{top_label}</text>",
        "<text x='5' y='18' font-size='11'>100%</text>",
        f"<text x='15' y='{10 + plot_h}' font-size='11'>0%</text>",
    ]
    for i, (name, values) in enumerate(series.items()):
        if not values:
            continue
        step = 1 / max(len(values) - 1, 1)
        points = " ".join(
            f"{left + plot_w * v / top:.1f},{10 + plot_h * (1 - k * step):.1f}"
            for k, v in enumerate(values)
        )
        color = _COLORS.get(name, "#888")
        parts.append(f"<polyline points='{points}' fill='none' stroke='{color}' stroke-width='2'/>")
        parts.append(
            f"<text x='{left + plot_w + 10}' y='{24 + 18 * i}' font-size='{size}' "
            f"fill='{color}'>{html.escape(name)}</text>"
        )
    return _svg(width, height, "".join(parts), title)


def _table(variants: dict[str, Any]) -> str:
    header = "".join(
        f"<th>{column}</th>"
        for column in ("variant", "success", "input tokens / task", "cost / success",
                       "p50 ms", "p95 ms", "p99 ms", "cache hits")
    ) + "<th class='text'>failures</th>"  # fmt: skip
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['success_rate']:.1%}</td>"
        f"<td>{v['input_tokens_per_task']:,.0f}</td>"
        f"<td>{format_cost(v['cost_per_success'])}</td>"
        f"<td>{v['latency_ms_p50']:,.0f}</td><td>{v['latency_ms_p95']:,.0f}</td>"
        f"<td>{v['latency_ms_p99']:,.0f}</td><td>{v['cache_hit_rate']:.0%}</td>"
        f"<td class='text'>{html.escape(format_failures(v['failures']))}</td></tr>"
        for name, v in variants.items()
    )
    return f"<table><tr>{header}</tr>{rows}</table>"


def write_report(result: dict[str, Any], folder: str | Path) -> Path:
    """Write ``report.html`` (and ``result.json``) into ``folder``; return the page's path."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    variants = result["variants"]
    charts = [
        _bars(
            "Input tokens per task",
            {n: v["input_tokens_per_task"] for n, v in variants.items()},
            lambda x: f"{x:,.0f} tokens",
        ),
        _bars(
            "Cost per successful task",
            {n: v["cost_per_success"] or 0 for n, v in variants.items()},
            format_cost,
        ),
        _cdf(
            "Latency distribution (share of tasks answered within x ms)",
            {n: v.get("latency_ms_percentiles", []) for n, v in variants.items()},
        ),
        _bars(
            "Latency p95",
            {n: v["latency_ms_p95"] for n, v in variants.items()},
            lambda x: f"{x:,.0f} ms",
        ),
        _bars(
            "Latency p50",
            {n: v["latency_ms_p50"] for n, v in variants.items()},
            lambda x: f"{x:,.0f} ms",
        ),
    ]
    levers = variants.get("all_levers", {})
    notes = ""
    if "batching" in levers and "routing" in levers:
        notes = (
            f"<p>all_levers: {levers['batching']['batches']:,} batches, "
            f"{levers['batching']['mean_batch_size']} requests each on average; small model "
            f"{levers['routing']['small_share']:.0%} of routed requests, escalated "
            f"{levers['routing']['escalation_rate']:.0%}; provider prefix cache "
            f"{levers['prefix_cached_share']:.0%} of input tokens.</p>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tokenlean bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}"
        "td,th{padding:4px 10px;text-align:right;white-space:nowrap}"
        "td:first-child,th:first-child,.text{text-align:left}"
        "td.text{white-space:normal}</style></head><body>"
        f"<h1>tokenlean bench</h1><p>{result['questions']:,} questions; simulated model "
        "(see docs/benchmarks.md).</p>"
        f"{_table(variants)}{notes}{''.join(charts)}</body></html>"
    )
    (target / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    path = target / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
