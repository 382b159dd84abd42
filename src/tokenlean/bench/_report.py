"""The harness's HTML report: one self-contained page with tables and SVG bar charts."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

__all__ = ["write_report"]

_COLORS = {
    "baseline": "#9e9e9e",
    "cached": "#64b5f6",
    "summarized_retrieved": "#81c784",
    "all_levers": "#ffb74d",
}


def _bars(title: str, values: dict[str, float], unit: str) -> str:
    width, row = 560, 28
    top = max(values.values(), default=0) or 1
    rows = []
    for i, (name, value) in enumerate(values.items()):
        length = int((width - 220) * value / top)
        y = i * row + 24
        color = _COLORS.get(name, "#888")
        rows.append(
            f"<text x='0' y='{y + 14}' font-size='12'>{html.escape(name)}</text>"
            f"<rect x='170' y='{y}' width='{length}' height='18' fill='{color}'/>"
            f"<text x='{175 + length}' y='{y + 14}' font-size='12'>{value:,.6g} {unit}</text>"
        )
    height = len(values) * row + 30
    return (
        f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(rows)}</svg>"
    )


def _cdf(title: str, series: dict[str, list[float]]) -> str:
    """Latency distributions as cumulative curves: x is latency (ms), y the share of tasks."""
    width, height, left, bottom = 560, 260, 50, 30
    top = max((max(v) for v in series.values() if v), default=0) or 1
    plot_w, plot_h = width - left - 150, height - bottom - 10
    parts = [
        f"<line x1='{left}' y1='{10 + plot_h}' x2='{left + plot_w}' y2='{10 + plot_h}' "
        "stroke='#444'/>",
        f"<line x1='{left}' y1='10' x2='{left}' y2='{10 + plot_h}' stroke='#444'/>",
        f"<text x='{left}' y='{height - 5}' font-size='11'>0</text>",
        f"<text x='{left + plot_w - 40}' y='{height - 5}' font-size='11'>{top:,.0f} ms</text>",
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
            f"<text x='{left + plot_w + 10}' y='{24 + 18 * i}' font-size='12' fill='{color}'>"
            f"{html.escape(name)}</text>"
        )
    return (
        f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>{''.join(parts)}</svg>"
    )


def write_report(result: dict[str, Any], folder: str | Path) -> Path:
    """Write ``report.html`` (and ``result.json``) into ``folder``; return the page's path."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    variants = result["variants"]
    header = (
        "<tr><th>variant</th><th>success</th><th>input tokens/task</th><th>cost/success</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>cache hits</th><th>failures</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['success_rate']:.3f}</td>"
        f"<td>{v['input_tokens_per_task']:,.0f}</td><td>{v['cost_per_success']}</td>"
        f"<td>{v['latency_ms_p50']}</td><td>{v['latency_ms_p95']}</td><td>{v['latency_ms_p99']}</td>"
        f"<td>{v['cache_hit_rate']:.2f}</td><td>{html.escape(json.dumps(v['failures']))}</td></tr>"
        for name, v in variants.items()
    )
    charts = [
        _bars(
            "Input tokens per task",
            {n: v["input_tokens_per_task"] for n, v in variants.items()},
            "tokens",
        ),
        _bars(
            "Cost per successful task",
            {n: v["cost_per_success"] or 0 for n, v in variants.items()},
            "USD",
        ),
        _cdf(
            "Latency distribution (share of tasks answered within x ms)",
            {n: v.get("latency_ms_percentiles", []) for n, v in variants.items()},
        ),
        _bars("Latency p95", {n: v["latency_ms_p95"] for n, v in variants.items()}, "ms"),
        _bars("Latency p50", {n: v["latency_ms_p50"] for n, v in variants.items()}, "ms"),
    ]
    levers = variants.get("all_levers", {})
    notes = ""
    if "batching" in levers and "routing" in levers:
        notes = (
            f"<p>all_levers: {levers['batching']['batches']} batches, "
            f"{levers['batching']['mean_batch_size']} requests each on average; small model "
            f"{levers['routing']['small_share']:.0%} of routed requests, escalated "
            f"{levers['routing']['escalation_rate']:.0%}; provider prefix cache "
            f"{levers['prefix_cached_share']:.0%} of input tokens.</p>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>tokenlean bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h1>tokenlean bench</h1><p>{result['questions']} questions; simulated model "
        "(see docs/benchmarks.md).</p>"
        f"<table>{header}{rows}</table>{notes}{''.join(charts)}</body></html>"
    )
    (target / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    path = target / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
