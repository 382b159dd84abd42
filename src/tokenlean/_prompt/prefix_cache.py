"""Provider prefix-cache hints derived from a :class:`PromptPlan`.

- **Anthropic** caches only up to explicit ``cache_control`` breakpoints (at most 4 per request),
  and only prefixes of at least the model's minimum length. :func:`anthropic_request` renders a
  plan to a Messages API body with breakpoints at the end of the static prefix, at the end of the
  conversation history when nothing volatile precedes it, and at earlier static boundaries while
  slots remain, each placed only where the estimated prefix reaches the minimum.
- **OpenAI** caches prefixes of 1,024 tokens or more automatically; ``prompt_cache_key`` steers
  requests that share a prefix to the same cache. :func:`openai_prompt_cache_key` derives it from
  the static-prefix fingerprint (and a hashed tenant, so tenants never share a key).

Token lengths are tokenlean's estimates: exact for OpenAI models with their own encoding, an
approximation of Claude's tokenizer otherwise. The constants live in ``providers.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tokenlean._canonical import fingerprint
from tokenlean._errors import ConfigurationError, MalformedRequestError
from tokenlean._prompt.plan import PromptPlan, SegmentKind
from tokenlean._prompt.providers import PrefixCacheRule, prefix_cache_rule
from tokenlean._tokens.counting import get_token_counter
from tokenlean._tokens.messages import count_tool_tokens

__all__ = [
    "AnthropicPrompt",
    "CacheBreakpoint",
    "anthropic_request",
    "openai_prompt_cache_key",
    "openai_request",
]


@dataclass(frozen=True)
class CacheBreakpoint:
    """A ``cache_control`` marker: which block carries it and the prefix length it closes.

    ``location`` is ``"tools"``, ``"system"`` or ``"messages"`` and ``index`` the block's
    position in that list (for messages, the message's position; the marker is on its last
    content block).
    """

    location: Literal["tools", "system", "messages"]
    index: int
    prefix_tokens: int
    reason: str


@dataclass(frozen=True)
class AnthropicPrompt:
    """A Messages API request body with cache breakpoints, and why they are where they are.

    Example:
        >>> from tokenlean import PromptPlan
        >>> plan = PromptPlan().with_policy("Be brief. " * 800).with_user("Hi")
        >>> prompt = anthropic_request(plan, "claude-sonnet-4-5")
        >>> prompt.cacheable, prompt.static_prefix_tokens >= prompt.min_cacheable_tokens
        (True, True)
        >>> prompt.breakpoints[0].reason
        "end of policy 'policy'"
        >>> prompt.request["system"][0]["cache_control"]
        {'type': 'ephemeral'}
        >>> short = PromptPlan().with_policy("Be brief.").with_user("Hi")
        >>> anthropic_request(short, "claude-sonnet-4-5").cacheable  # below the model's minimum
        False
    """

    request: dict[str, Any]
    breakpoints: tuple[CacheBreakpoint, ...]
    static_prefix_tokens: int
    min_cacheable_tokens: int
    estimated: bool

    @property
    def cacheable(self) -> bool:
        """True when at least one breakpoint was placed."""
        return bool(self.breakpoints)


def _content_text(index: int, content: Any) -> str:
    """A message's text: a string, or the text parts of a list (other parts refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise MalformedRequestError(
                    f"history message {index}: only text parts are converted, not {kind!r}"
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise MalformedRequestError(f"history message {index}: only text content is converted")


def _anthropic_turn(
    index: int, message: Mapping[str, Any], count: Callable[[str], int]
) -> tuple[str, list[dict[str, Any]], int]:
    """One OpenAI-shaped history message as an Anthropic turn: its role, its content blocks and
    about the tokens they take. An assistant's tool calls become ``tool_use`` blocks and a
    ``tool`` message a ``tool_result`` block of a user turn, as Anthropic's tool use expects.

    Raises:
        MalformedRequestError: another role, non-text content, a tool call without an id or a
            name or whose arguments are not a JSON object, or an empty assistant turn.
    """
    role = message.get("role")
    text = _content_text(index, message.get("content"))
    if role == "user":
        return "user", [_text_block(text)], count(text) + 3
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not call_id:
            raise MalformedRequestError(f"history message {index}: a tool result needs its id")
        block = {"type": "tool_result", "tool_use_id": str(call_id), "content": text}
        return "user", [block], count(text) + 3
    if role != "assistant":
        raise MalformedRequestError(
            f"history message {index}: Anthropic takes 'user', 'assistant' and 'tool' turns, "
            f"not {role!r}"
        )
    blocks = [_text_block(text)] if text else []
    tokens = count(text) + 3
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not call.get("id") or not function.get("name"):
            raise MalformedRequestError(
                f"history message {index}: a tool call needs an id and a function name"
            )
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = None
        if not isinstance(parsed, Mapping):
            raise MalformedRequestError(
                f"history message {index}: the arguments of tool call {call['id']!r} are not a "
                "JSON object"
            )
        blocks.append(
            {"type": "tool_use", "id": str(call["id"]), "name": str(function["name"]),
             "input": dict(parsed)}
        )  # fmt: skip
        tokens += count(str(function["name"])) + count(json.dumps(parsed)) + 3
    if not blocks:
        raise MalformedRequestError(f"history message {index}: an empty assistant turn")
    return "assistant", blocks, tokens


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def anthropic_request(
    plan: PromptPlan,
    model: str,
    *,
    ttl: Literal["5m", "1h"] = "5m",
    max_tokens: int = 1024,
    rule: PrefixCacheRule | None = None,
    counter: Callable[[str], int] | None = None,
) -> AnthropicPrompt:
    """Render ``plan`` as an Anthropic Messages API request with ``cache_control`` breakpoints.

    Policy, retrieved and state segments become ``system`` text blocks (in that order), tools
    become Anthropic tool definitions, history and the user turn become ``messages``. History in
    OpenAI's shape is converted: an assistant's ``tool_calls`` become ``tool_use`` blocks, and
    ``tool`` messages ``tool_result`` blocks of one user turn.

    Raises:
        ConfigurationError: ``model`` has no Anthropic prefix-cache rule and none was given.
        MalformedRequestError: a history message this renderer does not convert: a role other
            than ``user``, ``assistant`` and ``tool``, content other than text, or a tool call
            without an id and a name or whose arguments are not a JSON object.

    Example:
        >>> plan = PromptPlan().with_policy("Be brief. " * 800).with_user("Hi")
        >>> prompt = anthropic_request(plan, "claude-sonnet-4-5")
        >>> [(b.location, b.index) for b in prompt.breakpoints]
        [('system', 0)]
    """
    rule = rule or prefix_cache_rule(model)
    if rule is None or rule.provider != "anthropic":
        raise ConfigurationError(f"no Anthropic prefix-cache rule for model {model!r}")
    count = counter or plan.counter or get_token_counter(model)
    marker: dict[str, Any] = (
        {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    )

    tools: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    # Candidate boundaries in cache-prefix order (tools -> system -> messages).
    static_ends: list[CacheBreakpoint] = []
    history_end: CacheBreakpoint | None = None
    volatile_before_history = False
    cumulative = 0

    segments = plan.ordered()
    for segment in (s for s in segments if s.kind is SegmentKind.TOOLS):
        for tool in segment.items:
            function = tool["function"]
            tools.append(
                {
                    "name": function["name"],
                    "description": function.get("description", ""),
                    "input_schema": function.get("parameters") or {"type": "object"},
                }
            )
        cumulative += count_tool_tokens(segment.items, model=model, counter=count)
        static_ends.append(CacheBreakpoint("tools", len(tools) - 1, cumulative, "end of tools"))
    for segment in segments:
        if segment.kind in (SegmentKind.POLICY, SegmentKind.RETRIEVED, SegmentKind.STATE):
            system.append(_text_block(segment.text))
            cumulative += count(segment.text)
            if segment.kind is SegmentKind.POLICY:
                static_ends.append(
                    CacheBreakpoint(
                        "system", len(system) - 1, cumulative, f"end of policy {segment.name!r}"
                    )
                )
            else:
                volatile_before_history = True
        elif segment.kind is SegmentKind.HISTORY:
            for index, message in enumerate(segment.items):
                role, blocks, tokens = _anthropic_turn(index, message, count)
                previous = messages[-1] if messages else None
                if (
                    previous is not None
                    and role == "user"
                    and previous["role"] == "user"
                    and blocks[0]["type"] == "tool_result"
                    and all(b["type"] == "tool_result" for b in previous["content"])
                ):
                    previous["content"].extend(blocks)  # one user turn holds the results
                else:
                    messages.append({"role": role, "content": blocks})
                cumulative += tokens
            if segment.items and not volatile_before_history:
                history_end = CacheBreakpoint(
                    "messages", len(messages) - 1, cumulative, "end of history"
                )
        elif segment.kind is SegmentKind.USER:
            messages.append({"role": "user", "content": [_text_block(segment.text)]})

    static_tokens = static_ends[-1].prefix_tokens if static_ends else 0
    limit = rule.max_breakpoints or 4
    chosen: list[CacheBreakpoint] = []
    candidates = [*static_ends[-1:], *([history_end] if history_end else []), *static_ends[-2::-1]]
    for candidate in candidates:
        if len(chosen) < limit and candidate.prefix_tokens >= rule.min_tokens:
            chosen.append(candidate)
    targets = {"tools": tools, "system": system, "messages": messages}
    for point in chosen:
        block = targets[point.location][point.index]
        if point.location == "messages":
            block = block["content"][-1]
        block["cache_control"] = dict(marker)

    request: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        request["system"] = system
    if tools:
        request["tools"] = tools
    chosen.sort(key=lambda b: b.prefix_tokens)
    return AnthropicPrompt(
        request=request,
        breakpoints=tuple(chosen),
        static_prefix_tokens=static_tokens,
        min_cacheable_tokens=rule.min_tokens,
        estimated=True,
    )


def openai_prompt_cache_key(
    plan_or_fingerprint: PromptPlan | str, *, tenant: str | None = None, route: str | None = None
) -> str:
    """A ``prompt_cache_key`` for OpenAI: requests sharing a static prefix share the key.

    The key is a hash of the static-prefix fingerprint, the route and the tenant, so it reveals
    neither the prompt nor the tenant, and two tenants never share one.

    Example:
        >>> key = openai_prompt_cache_key("0" * 32, tenant="acme")
        >>> key.startswith("tl-"), len(key)
        (True, 27)
    """
    fp = (
        plan_or_fingerprint.static_prefix_fingerprint()
        if isinstance(plan_or_fingerprint, PromptPlan)
        else plan_or_fingerprint
    )
    if not fp:
        raise ConfigurationError("an empty fingerprint cannot key a prompt cache")
    return "tl-" + fingerprint("openai-prompt-cache-key", tenant or "", route or "", fp, length=24)


def openai_request(
    plan: PromptPlan,
    model: str,
    *,
    tenant: str | None = None,
    route: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Render ``plan`` as a Chat Completions request body, with a ``prompt_cache_key``.

    Example:
        >>> body = openai_request(PromptPlan().with_user("Hi"), "gpt-4o-mini")
        >>> sorted(body)
        ['messages', 'model', 'prompt_cache_key']
    """
    rendered = plan.render()
    body: dict[str, Any] = {"model": model, "messages": rendered.messages}
    if rendered.tools:
        body["tools"] = rendered.tools
    body["prompt_cache_key"] = openai_prompt_cache_key(
        rendered.static_prefix_fingerprint, tenant=tenant, route=route
    )
    body.update(extra or {})
    return body
