"""``tokenlean audit``: the command around :func:`tokenlean._audit.log_audit.audit_log`, a
sample-log generator, and the HTML report."""

from __future__ import annotations

import html
import json
import random
from pathlib import Path
from typing import Any

from tokenlean.bench._demo import generate_requests

__all__ = ["near_duplicates_line", "render_html", "write_sample_log"]


def write_sample_log(path: Path, n: int = 1000, seed: int = 11) -> Path:
    """A generated request log: the demo's support requests with growing histories, repeats
    and usage, one JSON object per line."""
    rng = random.Random(seed)
    base = generate_requests(n=min(n, 50), seed=seed)
    lines = []
    for i in range(n):
        request = json.loads(json.dumps(base[i % len(base)]))
        if rng.random() < 0.6:  # a follow-up carrying earlier turns
            turns = rng.randrange(1, 8)
            history = []
            for t in range(turns):
                history.append(
                    {
                        "role": "user",
                        "content": f"Earlier question {t} about order {rng.randrange(10**5)}.",
                    }
                )
                history.append(
                    {
                        "role": "assistant",
                        "content": "Here is what I found: " + "details " * rng.randrange(10, 60),
                    }
                )
            request["messages"][1:1] = history
        lines.append(
            json.dumps(
                {
                    "request": request,
                    "route": "support" if i % 3 else "billing",
                    "usage": {"prompt_tokens": 0},
                    "latency_ms": rng.uniform(300, 2500),
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; the first column is text, the others are figures (right-aligned)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if any(header) else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def near_duplicates_line(figures: dict[str, Any] | None) -> str:
    """The near-duplicate figures in one sentence (or how to get them)."""
    if figures is None:
        return "near duplicates: not computed (add --near-duplicates 0.9)"
    return (
        f"near duplicates at cosine >= {figures['threshold']}: "
        f"{figures['turns_with_a_near_duplicate']:,} of {figures['distinct_user_turns']:,} "
        f"distinct user turns ({figures['share']:.0%}), {figures['pairs']:,} pairs"
    )


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the audit's figures, as tables of formatted numbers."""
    summary = [
        ["requests", f"{report['requests']:,}"],
        ["input tokens (counted)", f"{report['input_tokens']:,}"],
        ["old history", f"{report['history_share']:.1%} of input tokens"],
        [
            "exact duplicate requests",
            f"{report['exact_duplicates']['requests']:,} "
            f"({report['exact_duplicates']['tokens']:,} tokens)",
        ],
    ]
    if report.get("reported_input_tokens"):
        summary.insert(2, ["input tokens (reported usage)", f"{report['reported_input_tokens']:,}"])
    if report.get("latency_ms_p95") is not None:
        summary.append(["latency p95", f"{report['latency_ms_p95']:,.0f} ms"])
    savings = [
        [lever, f"{tokens:,}", _usd(report["savings_usd"].get(lever, 0.0))]
        for lever, tokens in report["savings_tokens"].items()
    ]
    routes = [
        [
            route,
            f"{f['requests']:,}",
            f"{f['distinct_raw_prefixes']:,}",
            f"{f['distinct_static_prefixes']:,}",
            f"{f['top_prefix_share']:.0%}",
            f"{f['top_prefix_tokens']:,}",
            f"{f['provider_min_tokens']:,}" if f["provider_min_tokens"] is not None else "-",
            "yes" if f["reaches_provider_minimum"] else "no",
        ]
        for route, f in report["routes"].items()
    ]
    near = report.get("near_duplicates")
    near_rows = (
        [
            ["cosine threshold", f"{near['threshold']}"],
            ["distinct last user turns", f"{near['distinct_user_turns']:,}"],
            ["turns with a near duplicate", f"{near['turns_with_a_near_duplicate']:,}"],
            ["share of turns", f"{near['share']:.1%}"],
            ["near-duplicate pairs", f"{near['pairs']:,}"],
        ]
        if near
        else []
    )
    payloads = [
        [f"line {p['line']:,}", p["role"], f"{p['tokens']:,}"]
        for p in report["largest_retrieval_payloads"]
    ]
    route_header = [
        "route", "requests", "raw prefixes", "canonical prefixes", "top prefix share",
        "top prefix tokens", "provider minimum", "reaches it",
    ]  # fmt: skip
    near_section = (
        _table(["", ""], near_rows)
        if near_rows
        else f"<p>{html.escape(near_duplicates_line(None))}.</p>"
    )
    sections = [
        "<h1>tokenlean audit</h1>",
        _table(["", ""], summary),
        "<h2>Estimated savings</h2>",
        _table(["lever", "tokens", "at input prices"], savings),
        "<h2>Static prefixes per route</h2>",
        _table(route_header, routes),
        "<h2>Near-duplicate user turns</h2>",
        near_section,
        "<h2>Largest retrieval payloads</h2>",
        _table(["request", "role", "tokens"], payloads) if payloads else "<p>none</p>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{padding:3px 12px;text-align:right;white-space:nowrap}"
        "th:first-child,td:first-child{text-align:left}tr:nth-child(even){background:#f4f4f4}"
    )
    head = f"<meta charset='utf-8'><title>tokenlean audit</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(sections)}</body></html>"
