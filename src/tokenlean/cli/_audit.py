"""``tokenlean audit``: the command around :func:`tokenlean._audit.log_audit.audit_log`, a
sample-log generator, and the HTML report."""

from __future__ import annotations

import html
import json
import random
from pathlib import Path
from typing import Any

from tokenlean.bench._demo import generate_requests

__all__ = ["render_html", "write_sample_log"]


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


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the audit's figures."""

    def table(rows: list[tuple[str, Any]]) -> str:
        body = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        return f"<table>{body}</table>"

    sections = [
        "<h1>tokenlean audit</h1>",
        table(
            [
                ("requests", report["requests"]),
                ("input tokens", report["input_tokens"]),
                ("history share", report["history_share"]),
                ("exact duplicate requests", report["exact_duplicates"]["requests"]),
            ]
        ),
        "<h2>Estimated savings</h2>",
        table(
            [
                (k, f"{v:,} tokens / ${report['savings_usd'].get(k, 0):.4f}")
                for k, v in report["savings_tokens"].items()
            ]
        ),
        "<h2>Static prefixes per route</h2>",
        table([(route, json.dumps(figures)) for route, figures in report["routes"].items()]),
        "<h2>Largest retrieval payloads</h2>",
        table(
            [
                (f"line {p['line']}", f"{p['tokens']} tokens ({p['role']})")
                for p in report["largest_retrieval_payloads"]
            ]
        ),
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:2em}"
        "td{font-family:monospace}"
    )
    head = f"<meta charset='utf-8'><title>tokenlean audit</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(sections)}</body></html>"
