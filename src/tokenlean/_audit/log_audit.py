"""``tokenlean audit``: where the tokens of a request log go, and what each lever would save.

The log is JSON lines, one chat-completions request per line, either the request body itself
(``{"model", "messages", "tools", …}``) or an envelope ``{"request": {…}, "usage": {…},
"latency_ms": …, "route": …}``; Langfuse generations and LangSmith LLM runs (exported as
JSON lines) are read too. For each request the audit computes, without any model:

- the static prefix (leading system messages and tools) per route, as sent (raw) and
  canonicalized with volatile values moved out: how many distinct prefixes each way, how stable
  the most common one is, and whether it reaches the provider's minimum cacheable length; the
  prefix-cache lever is the cache reads canonical prefixes would get beyond the raw ones;
- exact duplicates (the same canonical request);
- the share of input tokens that is old history (turns before the last user turn);
- retrieval payloads (tool results and system messages after the leading ones), the largest;
- estimated savings per lever, in tokens and in money at the price table's input price.
"""

from __future__ import annotations

import functools
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenlean._cache.request import hash_key
from tokenlean._canonical import canonicalize_text
from tokenlean._errors import InvalidInputError, TokenleanError
from tokenlean._input import describe_value, read_json_lines
from tokenlean._metrics.prices import PriceTable
from tokenlean._prompt.plan import PromptPlan
from tokenlean._prompt.providers import prefix_cache_rule
from tokenlean._stats import rank_percentile
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import count_message_tokens, normalize_role

__all__ = ["AuditReport", "audit_log", "read_request_log"]

_KEY = b"tokenlean-audit"


_LANGCHAIN_ROLES = {
    "system": "system",
    "human": "user",
    "ai": "assistant",
    "tool": "tool",
    "function": "tool",
    "SystemMessage": "system",
    "HumanMessage": "user",
    "AIMessage": "assistant",
    "ToolMessage": "tool",
    "FunctionMessage": "tool",
}


def _plain_message(message: Any) -> Any:
    """An OpenAI-style message from a LangChain-serialized one (``{"lc": 1, "id": [...,
    "HumanMessage"], "kwargs": {...}}`` or ``{"type": "human", "content": ...}``); other values
    are returned unchanged."""
    if not isinstance(message, Mapping) or "role" in message:
        return message
    if message.get("lc") == 1 and isinstance(message.get("id"), list) and message["id"]:
        kind, fields = str(message["id"][-1]), message.get("kwargs") or {}
    else:
        kind, fields = str(message.get("type", "")), message.get("data") or message
    if kind.endswith("Chunk"):  # a streamed message: an AIMessageChunk is an AIMessage
        kind = kind[: -len("Chunk")]
    role = _LANGCHAIN_ROLES.get(kind)
    if kind in ("ChatMessage", "chat") and isinstance(fields, Mapping):
        role = str(fields.get("role") or "")  # a ChatMessage carries its own role
    if not role or not isinstance(fields, Mapping):
        return message
    plain: dict[str, Any] = {"role": role, "content": fields.get("content", "")}
    for key in ("tool_calls", "tool_call_id", "name"):
        if fields.get(key):
            plain[key] = fields[key]
    return plain


def _seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _normalize(row: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """(request, usage, latency ms) of one log row, in any of the accepted shapes."""
    raw_usage = row.get("usage")
    usage: dict[str, Any] = dict(raw_usage) if isinstance(raw_usage, Mapping) else {}
    latency = row.get("latency_ms")
    start = _seconds(row.get("start_time") or row.get("startTime"))
    end = _seconds(row.get("end_time") or row.get("endTime"))
    if latency is None and start is not None and end is not None and end >= start:
        latency = round((end - start) * 1000, 1)  # clocks that disagree give no latency
    if isinstance(row.get("inputs"), Mapping) and "messages" in row["inputs"]:
        # A LangSmith run: inputs.messages is a list of prompts (one per generation).
        prompts = row["inputs"]["messages"]
        messages = prompts[0] if prompts and isinstance(prompts[0], list) else prompts
        params = (row.get("extra") or {}).get("invocation_params") or {}
        model = params.get("model") or params.get("model_name") or row.get("name") or "unknown"
        request: Any = {"model": model, "messages": [_plain_message(m) for m in messages]}
        if params.get("tools"):
            request["tools"] = params["tools"]
        for key in ("prompt_tokens", "completion_tokens"):
            if isinstance(row.get(key), int):
                usage.setdefault(key, row[key])
        return request, usage, latency
    request = row.get("request") or row.get("input") or row
    if isinstance(request, list):  # a Langfuse generation: input is the message list
        request = {"model": row.get("model") or "unknown", "messages": request}
    if isinstance(request, dict) and "body" in request and "messages" not in request:
        request = request["body"]
    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        if "model" not in request and row.get("model"):
            request = {**request, "model": row["model"]}
        messages = request["messages"]
        if not all(isinstance(m, Mapping) and "role" in m for m in messages):  # LangChain shapes
            request = {**request, "messages": [_plain_message(m) for m in messages]}
    langfuse_usage = (
        ("prompt_tokens", "input"),
        ("prompt_tokens", "promptTokens"),
        ("completion_tokens", "output"),
        ("completion_tokens", "completionTokens"),
    )
    for ours, theirs in langfuse_usage:
        if isinstance(usage.get(theirs), int):
            usage.setdefault(ours, usage[theirs])
    return request, usage, latency


def read_request_log(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, envelope)`` for each request of a JSONL log.

    Accepted shapes: a chat-completions request body; an envelope with ``request`` (or
    ``request.body``), ``usage``, ``latency_ms`` and ``route``; a Langfuse generation
    (``input`` as messages, ``model``, ``usage.input``/``output``, ``startTime``/``endTime``);
    a LangSmith LLM run (``inputs.messages`` in LangChain's serialization,
    ``extra.invocation_params.model``, ``prompt_tokens``, ``start_time``/``end_time``).

    Raises:
        InvalidInputError: a line that is not JSON or holds no chat request.
    """
    for number, row in read_json_lines(path):
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{path}:{number}: expected an object (a request or an envelope); this line is "
                f"{describe_value(row)}"
            )
        try:
            request, usage, latency = _normalize(row)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{path}:{number}: not a request of a known shape ({type(exc).__name__})"
            ) from None
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            raise InvalidInputError(
                f"{path}:{number}: no chat request with a 'messages' list ({describe_value(row)})"
            )
        problem = _malformed(request, usage, latency, row)
        if problem is not None:
            raise InvalidInputError(f"{path}:{number}: {problem}")
        tools = request.get("tools")
        if tools is not None and not (
            isinstance(tools, list) and all(isinstance(tool, Mapping) for tool in tools)
        ):
            raise InvalidInputError(
                f"{path}:{number}: the request's 'tools' is {describe_value(tools)}, not a list "
                "of tool objects"
            )
        yield (
            number,
            {
                "request": request,
                "usage": usage,
                "latency_ms": latency if _is_number(latency) else None,
                "route": _route(row, request),
            },
        )


_ROLES = frozenset(["system", "developer", "user", "assistant", "tool"])
_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")


def _malformed(
    request: Mapping[str, Any], usage: Mapping[str, Any], latency: Any, row: Mapping[str, Any]
) -> str | None:
    """What is wrong with a row's values, or None: each value is checked for its type, so a
    figure is never computed from a string, a negative count or a message with no known role."""
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        return f"the request's 'model' is {describe_value(model)}, not a string"
    messages = request["messages"]
    if not messages:
        return "the request's 'messages' is empty"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        if not isinstance(role, str) or normalize_role(role) not in _ROLES:
            found = (
                describe_value(role) if isinstance(message, Mapping) else describe_value(message)
            )
            return f"message {index} has no known role ({found})"
    for name in _TOKEN_FIELDS:
        value = usage.get(name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= 0):  # fmt: skip
            return f"usage {name!r} is {describe_value(value)}, not a count of tokens"
    if latency is not None and not (_is_number(latency) and latency >= 0):
        found = repr(latency) if _is_number(latency) else describe_value(latency)
        return f"the latency is {found}, not a non-negative number of milliseconds"
    route = row.get("route")
    if route is not None and not isinstance(route, str):
        return f"'route' is {describe_value(route)}, not a string"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _route(row: Mapping[str, Any], request: Mapping[str, Any]) -> str | None:
    """The route a row names (the envelope's, the request metadata's, or the row metadata's)."""
    for holder in (row, request.get("metadata"), row.get("metadata")):
        if isinstance(holder, Mapping) and holder.get("route"):
            return str(holder["route"])[:200]
    return None


@dataclass
class AuditReport:
    """The audit's figures (``to_json()`` for the machine-readable form)."""

    requests: int = 0
    input_tokens: int = 0
    reported_input_tokens: int = 0
    history_tokens: int = 0
    duplicate_requests: int = 0
    duplicate_tokens: int = 0
    canonical_saving_tokens: int = 0
    prefix_saving_tokens: float = 0.0
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    largest_payloads: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: dict[str, Any] | None = None
    savings_usd: dict[str, float] = field(default_factory=dict)
    latency_ms_p95: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "reported_input_tokens": self.reported_input_tokens,
            "history_share": round(self.history_tokens / self.input_tokens, 4)
            if self.input_tokens
            else 0.0,
            "exact_duplicates": {
                "requests": self.duplicate_requests,
                "tokens": self.duplicate_tokens,
            },
            "routes": self.routes,
            "largest_retrieval_payloads": self.largest_payloads,
            "near_duplicates": self.near_duplicates,
            "savings_tokens": {
                "exact_cache": self.duplicate_tokens,
                "canonicalization": self.canonical_saving_tokens,
                "prefix_cache": round(self.prefix_saving_tokens),
                "history_compression": round(self.history_tokens * 0.8),
            },
            "savings_usd": self.savings_usd,
            "latency_ms_p95": self.latency_ms_p95,
        }


def _last_user_index(messages: list[Any]) -> int:
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], Mapping) and messages[index].get("role") == "user":
            return index
    return len(messages)


def audit_log(
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    prices: PriceTable | None = None,
    near_duplicates: float | None = None,
    embedder: Any = None,
    top_payloads: int = 5,
) -> AuditReport:
    """Audit a request log (see the module documentation).

    Args:
        rows: from :func:`read_request_log`.
        prices: prices for the money figures (default table).
        near_duplicates: a cosine similarity; when set, last user turns at or above it count as
            near-duplicates (this embeds every distinct last user turn once).
        embedder: for near-duplicates (default: the bundled model).
    """
    prices = prices or PriceTable.default()
    count = get_token_counter()
    report = AuditReport()
    seen: Counter[str] = Counter()
    prefixes: dict[str, Counter[str]] = defaultdict(Counter)
    raw_prefixes: dict[str, Counter[str]] = defaultdict(Counter)
    prefix_tokens: dict[str, int] = {}
    route_models: dict[str, str] = {}
    route_requests: Counter[str] = Counter()
    payloads: list[tuple[int, int, str]] = []
    latencies: list[float] = []
    user_turns: dict[str, int] = {}
    money: dict[str, float] = defaultdict(float)
    canon = functools.lru_cache(maxsize=65536)(canonicalize_text)
    static_memo: dict[str, tuple[str, int, int]] = {}
    for number, row in rows:
        request = row["request"]
        model = str(request.get("model") or "unknown")
        route = str(row["route"] or model)
        messages = request["messages"]
        tools = request.get("tools")
        lead = 0
        while (
            lead < len(messages)
            and isinstance(messages[lead], Mapping)
            and messages[lead].get("role") in ("system", "developer")
        ):
            lead += 1
        last = _last_user_index(messages)
        try:
            tokens = count_message_tokens(messages, model=model, tools=tools, counter=count).total
            # The static prefix is planned once per distinct raw prefix (logs repeat them).
            raw_fp = hash_key(_KEY, json.dumps([messages[:lead], tools]))
            static = static_memo.get(raw_fp)
            if static is None and not lead and not tools:
                static = static_memo[raw_fp] = ("", 0, 0)  # no static prefix at all
            if static is None:
                head = {"model": model, "messages": messages[:lead], "tools": tools}
                rendered = PromptPlan.from_request(head, counter=count, model=model).render()
                raw_static = (
                    count_message_tokens(
                        messages[:lead], model=model, tools=tools, counter=count
                    ).total
                    - 3
                )
                static = (
                    rendered.static_prefix_fingerprint,
                    rendered.static_prefix_tokens,
                    raw_static,
                )
                static_memo[raw_fp] = static
        except TokenleanError as exc:
            raise InvalidInputError(f"request on line {number}: {exc}") from exc
        except (AttributeError, RecursionError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"request on line {number}: its messages or tools have an unexpected shape "
                f"({type(exc).__name__})"
            ) from exc
        fp, static_tokens, raw_static_tokens = static
        price = prices.price(model)
        per_token = price.input / 1e6 if price else 0.0
        report.requests += 1
        report.input_tokens += tokens
        usage = row["usage"]
        reported = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
        report.reported_input_tokens += int(reported) if _is_number(reported) else 0
        if isinstance(row.get("latency_ms"), int | float):
            latencies.append(float(row["latency_ms"]))
        # History: turns before the last user turn, other than leading system messages.
        history = [m for m in messages[lead:last] if isinstance(m, Mapping)]
        history_tokens = count_message_tokens(history, counter=count).total - 3 if history else 0
        report.history_tokens += history_tokens
        money["history_compression"] += history_tokens * 0.8 * per_token
        canonical_messages = []
        saving = max(raw_static_tokens - static_tokens, 0)
        for index, message in enumerate(messages):
            if not isinstance(message, Mapping):
                raise InvalidInputError(
                    f"request on line {number}: message {index} is not an object"
                )
            content = message.get("content")
            if isinstance(content, str) and index >= lead:
                canonical = canon(content)
                if canonical != content:
                    saving += max(count(content) - count(canonical), 0)
                content = canonical
            elif isinstance(content, str):
                content = canon(content)
            canonical_messages.append([message.get("role"), content])
            is_payload = message.get("role") == "tool" or (
                index >= lead and message.get("role") in ("system", "developer")
            )
            if is_payload and isinstance(message.get("content"), str):
                payloads.append((count(message["content"]), number, str(message.get("role"))))
        report.canonical_saving_tokens += saving
        money["canonicalization"] += saving * per_token
        # Exact duplicates, on the canonical request (as the exact cache keys it).
        params = {
            k: v
            for k, v in request.items()
            if k not in ("messages", "tools", "metadata", "stream", "user")
        }
        key = hash_key(
            _KEY,
            json.dumps(
                [model, params, raw_fp if tools else None, canonical_messages],
                sort_keys=True,
                default=str,
            ),
        )
        seen[key] += 1
        if seen[key] > 1:
            report.duplicate_requests += 1
            report.duplicate_tokens += tokens
            money["exact_cache"] += tokens * per_token
        # Static prefix per route: what the provider sees today (raw) and after tokenlean
        # canonicalizes it; the lever is the difference in cache reads.
        rule = prefix_cache_rule(model)
        if rule is not None and static_tokens >= rule.min_tokens:
            cached = static_tokens * (1 - rule.read_multiplier)
            gain = (prefixes[route][fp] > 0) - (raw_prefixes[route][raw_fp] > 0)
            report.prefix_saving_tokens += cached * gain
            money["prefix_cache"] += cached * gain * per_token
        prefixes[route][fp] += 1
        raw_prefixes[route][raw_fp] += 1
        prefix_tokens[fp] = static_tokens
        route_models[route] = model
        route_requests[route] += 1
        if last < len(messages) and isinstance(messages[last].get("content"), str):
            user_turns.setdefault(messages[last]["content"], tokens)
    for route, counts in prefixes.items():
        fp, top = counts.most_common(1)[0]
        rule = prefix_cache_rule(route_models[route])
        report.routes[route] = {
            "requests": route_requests[route],
            "distinct_static_prefixes": len(counts),
            "distinct_raw_prefixes": len(raw_prefixes[route]),
            "top_prefix_share": round(top / route_requests[route], 4),
            "top_prefix_tokens": prefix_tokens[fp],
            "provider_min_tokens": rule.min_tokens if rule else None,
            "reaches_provider_minimum": bool(rule and prefix_tokens[fp] >= rule.min_tokens),
        }
    payloads.sort(reverse=True)
    report.largest_payloads = [
        {"tokens": t, "line": n, "role": r} for t, n, r in payloads[:top_payloads]
    ]
    if latencies:
        latencies.sort()
        report.latency_ms_p95 = rank_percentile(latencies, 0.95)
    if near_duplicates is not None and len(user_turns) > 1:
        report.near_duplicates = _near_duplicates(list(user_turns), near_duplicates, embedder)
    report.savings_usd = {k: round(v, 6) for k, v in money.items()}
    return report


def _near_duplicates(texts: list[str], threshold: float, embedder: Any) -> dict[str, Any]:

    if embedder is None:
        from tokenlean._embeddings import default_embedder

        embedder = default_embedder()
    vectors = embedder.embed(texts)
    pairs = 0
    duplicates = 0
    for start in range(0, len(texts), 1024):
        block = vectors[start : start + 1024] @ vectors.T
        for row, scores in enumerate(block):
            index = start + row
            scores[: index + 1] = -1  # each pair once, no self-pairs
            above = int((scores >= threshold).sum())
            pairs += above
            duplicates += int(above > 0)
    return {
        "threshold": threshold,
        "distinct_user_turns": len(texts),
        "turns_with_a_near_duplicate": duplicates,
        "pairs": pairs,
        "share": round(duplicates / len(texts), 4),
    }
