"""``tokenlean demo``: canonicalization and prefix caching on a generated prompt sample.

The sample is a support-copilot request stream made by :func:`generate_requests`: a long policy
with the untidy whitespace, CRLF line endings and per-request timestamp and request id that real
system prompts carry, tool schemas whose keys come in a different order each time, and a
different user question per request. The demo shows the tokens of each request before and after
canonicalization, the static-prefix fingerprint of both forms (raw prefixes differ on every
request, canonical ones are identical), and what that is worth with a provider prefix cache.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from tokenlean._canonical import fingerprint
from tokenlean._prompt.plan import PromptPlan
from tokenlean._prompt.prefix_cache import anthropic_request, openai_prompt_cache_key
from tokenlean._prompt.providers import prefix_cache_rule
from tokenlean._tokens.counting import describe_counter, get_token_counter
from tokenlean._tokens.messages import count_request_tokens

__all__ = ["generate_requests", "run_demo"]

_PRODUCTS = ["Aurora router", "Nimbus camera", "Pulse earbuds", "Atlas laptop", "Echo speaker"]
_RULES = [
    "Refunds are available within {days} days of delivery for items in their original packaging.",
    "Never promise a delivery date that the order system has not confirmed.",
    "Escalate to a human agent when the customer mentions a safety issue with the {product}.",
    "Store credit may be offered instead of a refund only if the customer asks for it.",
    "Quote prices exactly as the catalogue lists them, including currency.",
    "Do not ask for a full card number; the last four digits are enough to find a payment.",
    "For warranty claims on the {product}, collect the serial number and the purchase date.",
    "Replacement orders ship within {days} business days once the return is scanned.",
    "Summarize the resolution in one sentence at the end of every conversation.",
    "If an order is marked as lost, open a carrier claim before offering a replacement.",
]
_QUESTIONS = [
    "Can I still return my {product}? It arrived {days} days ago.",
    "My {product} stopped charging, is that covered by the warranty?",
    "Where is my replacement {product}? The return was scanned last week.",
    "Could I get store credit instead of a refund for the {product}?",
    "The tracking page says my {product} is lost. What happens now?",
]


def _messy(rng: random.Random, sentence: str) -> str:
    """Add the whitespace noise templated prompts pick up: double spaces, trailing tabs."""
    words = sentence.split(" ")
    out = words[0]
    for word in words[1:]:
        out += ("  " if rng.random() < 0.15 else " ") + word
    return out + ("\t " if rng.random() < 0.3 else "")


def _policy(rng: random.Random, now: datetime, request_id: str) -> str:
    lines = [
        "You are the support copilot of Northwind Devices.",
        f"Current time: {now.isoformat().replace('+00:00', 'Z')}",
        f"Request id: {request_id}",
        "",
        "## Policy",
    ]
    for section in range(6):
        lines.append("")
        lines.append(f"### Section {section + 1}")
        for index, rule in enumerate(_RULES):
            product = _PRODUCTS[(section + index) % len(_PRODUCTS)]
            text = rule.format(days=14 + section, product=product)
            lines.append(f"- {_messy(rng, text)}")
    lines += ["", "", "", "Answer in the customer's language.   ", ""]
    return "\r\n".join(lines)


def _tools(rng: random.Random) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by its number or the customer's email.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "order_number": {"type": "string", "description": "The order number."},
                        "email": {"type": "string", "description": "The customer's email."},
                    },
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "open_return",
                "description": "Open a return for an order line.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "order_number": {"type": "string", "description": "The order number."},
                        "reason": {
                            "type": "string",
                            "description": "Why the item is returned.",
                            "enum": ["damaged", "not_as_described", "changed_mind"],
                        },
                    },
                    "required": ["order_number", "reason"],
                },
            },
        },
    ]

    def shuffled(value: Any) -> Any:
        # Serializers in different services emit keys in different orders.
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {key: shuffled(item) for key, item in items}
        if isinstance(value, list):
            return [shuffled(item) for item in value]
        return value

    return [shuffled(tool) for tool in tools]


def generate_requests(n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """A seeded stream of ``n`` chat-completions requests from one support deployment."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    requests = []
    for index in range(n):
        now = start + timedelta(minutes=7 * index, seconds=rng.randrange(60))
        request_id = f"req_{rng.getrandbits(64):016x}"
        question = rng.choice(_QUESTIONS).format(
            product=rng.choice(_PRODUCTS), days=rng.randrange(3, 30)
        )
        requests.append(
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": _policy(rng, now, request_id)},
                    {"role": "user", "content": question},
                ],
                "tools": _tools(rng),
            }
        )
    return requests


def _raw_prefix_fingerprint(request: dict[str, Any]) -> str:
    system = request["messages"][0]["content"]
    return fingerprint(system, json.dumps(request["tools"]))


def demo_report(seed: int = 7, n: int = 5) -> dict[str, Any]:
    """The figures the demo prints, as one JSON-ready object."""
    requests = generate_requests(n=n, seed=seed)
    model = requests[0]["model"]
    counter = get_token_counter(model)
    counter_name, approximate = describe_counter(counter)
    rows: list[dict[str, Any]] = []
    for index, request in enumerate(requests):
        raw_tokens = count_request_tokens(request, counter=counter).total
        plan = PromptPlan.from_request(request, counter=counter)
        rendered = plan.render()
        rows.append(
            {
                "request": index + 1,
                "tokens_raw": raw_tokens,
                "tokens_canonical": rendered.total_tokens,
                "static_prefix_tokens": rendered.static_prefix_tokens,
                "raw_prefix_fingerprint": _raw_prefix_fingerprint(request)[:8],
                "canonical_prefix_fingerprint": rendered.static_prefix_fingerprint[:8],
                "moved": [f"{m.kind}={m.value}" for m in rendered.moved],
                "prompt_cache_key": openai_prompt_cache_key(
                    rendered.static_prefix_fingerprint, tenant="northwind"
                ),
            }
        )
    rule = prefix_cache_rule(model)
    assert rule is not None
    # With a stable prefix every request after the first reads the static prefix from cache.
    raw_total = sum(r["tokens_raw"] for r in rows)
    canonical_total = sum(r["tokens_canonical"] for r in rows)
    cached = sum(r["static_prefix_tokens"] for r in rows[1:])
    billed = canonical_total - cached + cached * rule.read_multiplier
    last_plan = PromptPlan.from_request(requests[-1], counter=counter)
    claude = anthropic_request(last_plan, "claude-sonnet-4-5", counter=counter)
    return {
        "model": model,
        "counter": counter_name,
        "counter_approximate": approximate,
        "requests": rows,
        "distinct_raw_prefixes": len({r["raw_prefix_fingerprint"] for r in rows}),
        "distinct_canonical_prefixes": len({r["canonical_prefix_fingerprint"] for r in rows}),
        "tokens_raw_total": raw_total,
        "tokens_canonical_total": canonical_total,
        "prefix_cache": {
            "provider_min_tokens": rule.min_tokens,
            "cached_read_multiplier": rule.read_multiplier,
            "cached_prefix_tokens": cached,
            "billed_input_equivalent": round(billed, 1),
            "saving_vs_raw_pct": round(100 * (1 - billed / raw_total), 1),
        },
        "anthropic_breakpoints": [
            {"location": b.location, "index": b.index, "prefix_tokens": b.prefix_tokens}
            for b in claude.breakpoints
        ],
    }


def run_demo(seed: int = 7, as_json: bool = False) -> None:
    """Print the demo report as tables (or JSON)."""
    report = demo_report(seed=seed)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    flag = " (approximate)" if report["counter_approximate"] else ""
    console.print(
        f"[bold]tokenlean demo[/bold]: {len(report['requests'])} generated support requests "
        f"for {report['model']}, counted with {report['counter']}{flag}\n"
    )
    table = Table(title="Before and after canonicalization")
    for column in (
        "req",
        "tokens raw",
        "tokens canonical",
        "static prefix",
        "raw prefix",
        "canonical prefix",
        "moved",
    ):
        table.add_column(column, overflow="fold")
    for row in report["requests"]:
        table.add_row(
            str(row["request"]),
            str(row["tokens_raw"]),
            str(row["tokens_canonical"]),
            str(row["static_prefix_tokens"]),
            row["raw_prefix_fingerprint"],
            row["canonical_prefix_fingerprint"],
            str(len(row["moved"])),
        )
    console.print(table)
    console.print(f"Moved out of request 1's prefix: {', '.join(report['requests'][0]['moved'])}")
    cache = report["prefix_cache"]
    console.print(
        f"Distinct static prefixes: raw {report['distinct_raw_prefixes']}, "
        f"canonical {report['distinct_canonical_prefixes']}.\n"
        f"Input tokens: raw {report['tokens_raw_total']}, canonical "
        f"{report['tokens_canonical_total']}.\n"
        f"With the provider's prefix cache ({report['model']}: prefixes of "
        f"{cache['provider_min_tokens']}+ tokens, cached tokens at "
        f"{cache['cached_read_multiplier']:g}x), the canonical stream bills like "
        f"{cache['billed_input_equivalent']:,.0f} input tokens: "
        f"{cache['saving_vs_raw_pct']}% less than the raw stream, whose prefixes never repeat.\n"
        f"OpenAI prompt_cache_key: {report['requests'][0]['prompt_cache_key']}; Anthropic "
        f"cache breakpoints (claude-sonnet-4-5): {report['anthropic_breakpoints']}"
    )
