"""How much of the memory's prompt a provider's prefix cache can reuse from call to call.

A pack renders the system prompt (the static part) as the first text block of its system
message, and what changes (state, summary, retrieved turns) after it. A provider that caches up
to explicit breakpoints (Anthropic's ``cache_control`` closes a block) reuses a prefix only up to
a block boundary, so what counts is the leading run of *whole blocks* a call shares with the
call before it.

- ``static_prefix_share``: over every call after the first, the share of the static part's
  tokens that lie in leading blocks byte-identical to the previous call's (target: 0.95 or
  more). ``static_prefix_share_one_block`` is the same with the system message rendered as one
  block, as before the static prefix had a block of its own.
- ``billed_input``: input tokens as a provider with explicit breakpoints bills them, in
  input-token equivalents (a cache read at 0.1, a cache write at 1.25, Anthropic's 5-minute
  rates), with a breakpoint at the end of the static block (``static_block``) and at the end of
  the whole system message (``one_block``), for a policy long enough to be cached at all (1,024
  tokens, Anthropic's minimum for Sonnet models).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tokenlean._embeddings import Embedder
from tokenlean._errors import ConfigurationError
from tokenlean._memory.conversation import ConversationMemory
from tokenlean._tokens.messages import count_message_tokens

__all__ = [
    "CACHE_READ",
    "CACHE_WRITE",
    "MIN_CACHED_TOKENS",
    "prefix_share",
    "static_prefix_figures",
]

CACHE_READ = 0.1
CACHE_WRITE = 1.25
MIN_CACHED_TOKENS = 1024
_POLICY_LINE = (
    "Answer only from the conversation; quote the speaker and the date of the turn you rely on, "
    "say so when the conversation does not tell, and never invent names, dates or places."
)


def _blocks(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The prompt as its content blocks, in order: (role, text) per text part or message."""
    out: list[tuple[str, str]] = []
    for message in messages:
        content = message.get("content")
        role = str(message.get("role"))
        if isinstance(content, list):
            out.extend((role, str(part.get("text", ""))) for part in content)
        else:
            out.append((role, f"{content or ''}{message.get('tool_calls') or ''}"))
    return out


def _one_block(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages with the system message's parts joined into one text (the layout before
    the static prefix had a block of its own: the parts join to exactly that text)."""
    out = [dict(m) for m in messages]
    if out and isinstance(out[0].get("content"), list):
        out[0]["content"] = "".join(str(p.get("text", "")) for p in out[0]["content"])
    return out


def _shared_tokens(
    previous: list[tuple[str, str]], current: list[tuple[str, str]], count: Callable[[str], int]
) -> int:
    """Tokens of the leading blocks of ``current`` identical to those of ``previous``."""
    shared = 0
    for before, now in zip(previous, current, strict=False):
        if before != now:
            break
        shared += count(now[1])
    return shared


def prefix_share(
    calls: Sequence[Sequence[Mapping[str, Any]]],
    statics: Sequence[str],
    count: Callable[[str], int],
) -> float:
    """The share of the static part's tokens, over every call after the first, that lie in
    leading blocks byte-identical to the previous call's (1.0 without any static part).

    Example:
        >>> words = lambda text: len(text.split())
        >>> first = [{"role": "system", "content": [{"type": "text", "text": "be brief"},
        ...                                          {"type": "text", "text": "state 1"}]}]
        >>> second = [{"role": "system", "content": [{"type": "text", "text": "be brief"},
        ...                                           {"type": "text", "text": "state 2"}]}]
        >>> prefix_share([first, second], ["be brief"] * 2, words)
        1.0
        >>> prefix_share([_one_block(first), _one_block(second)], ["be brief"] * 2, words)
        0.0
    """
    reused = total = 0
    for index in range(1, len(calls)):
        static = count(statics[index])
        shared = _shared_tokens(_blocks(calls[index - 1]), _blocks(calls[index]), count)
        reused += min(shared, static)
        total += static
    return round(reused / total, 4) if total else 1.0


def _billed(
    calls: Sequence[Sequence[Mapping[str, Any]]], count: Callable[[str], int]
) -> dict[str, float]:
    """Input-token equivalents with one breakpoint at the end of the first block: read from
    cache when that block is the previous call's and long enough, written otherwise."""
    billed = cached = total = 0.0
    previous: tuple[str, str] | None = None
    for messages in calls:
        tokens = count_message_tokens(messages, counter=count).total
        first = _blocks(messages)[0]
        prefix = count(first[1])
        total += tokens
        if prefix < MIN_CACHED_TOKENS:
            billed += tokens
        elif first == previous:
            billed += tokens - prefix + CACHE_READ * prefix
            cached += prefix
        else:
            billed += tokens - prefix + CACHE_WRITE * prefix
        previous = first
    return {
        "input_tokens": int(total),
        "cached_tokens": int(cached),
        "billed_input_tokens": round(billed),
        "billed_share": round(billed / total, 4) if total else 1.0,
    }


def static_prefix_figures(
    messages: Sequence[Mapping[str, Any]],
    *,
    system: str,
    budget: int,
    embedder: Embedder,
    counter: Callable[[str], int],
    every: int = 4,
) -> dict[str, Any]:
    """Replay a conversation one turn at a time and, every ``every`` turns, assemble the context
    for the next turn; return the static-prefix figures of those calls.

    The share is measured with ``system`` as given; the billed input with a policy of at least
    1,024 tokens (``system`` and a fixed instruction repeated), on ``budget`` plus the policy's
    tokens, so that the memory keeps the same room.
    """
    if every < 1:
        raise ConfigurationError(f"every must be at least 1, not {every}")
    policy = system
    while counter(policy) < MIN_CACHED_TOKENS + 32:
        policy += "\n" + _POLICY_LINE
    extra = counter(policy) - counter(system)
    short = ConversationMemory(embedder=embedder, counter=counter)
    calls: list[list[dict[str, Any]]] = []
    long_calls: list[list[dict[str, Any]]] = []
    for index, message in enumerate(messages):
        if index and index % every == 0:
            user = str(message.get("content") or "")
            calls.append(short.context("s", budget=budget, system=system, user=user).messages)
            long_calls.append(
                short.context("s", budget=budget + extra, system=policy, user=user).messages
            )
        short.add("s", [message])
    statics = [system] * len(calls)
    return {
        "static_prefix_share": prefix_share(calls, statics, counter),
        "static_prefix_share_one_block": prefix_share(
            [_one_block(c) for c in calls], statics, counter
        ),
        "static_prefix_calls": len(calls),
        "billed_input": {
            "policy_tokens": counter(policy),
            "static_block": _billed(long_calls, counter),
            "one_block": _billed([_one_block(c) for c in long_calls], counter),
        },
    }
