"""Provider prefix-caching constants, in one dated table.

Providers change these figures; every number here comes from the provider's documentation as of
:data:`PROVIDER_TABLE_AS_OF`. Update the table (and that date) in one place when they change, or
pass your own :class:`PrefixCacheRule` to the functions that take one.

Sources: Anthropic's "Prompt caching" guide (minimum cacheable lengths, at most 4 breakpoints,
cache writes at 1.25x and reads at 0.1x the base input price for the 5-minute cache); OpenAI's
"Prompt caching" guide and announcement (automatic for prompts of 1,024 tokens or more, in
128-token increments; cached-input price per model family).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

__all__ = ["PROVIDER_TABLE_AS_OF", "PrefixCacheRule", "prefix_cache_rule"]

PROVIDER_TABLE_AS_OF = date(2026, 4, 16)

Provider = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class PrefixCacheRule:
    """How one provider's prefix cache treats one model family.

    Attributes:
        provider: ``"openai"`` or ``"anthropic"``.
        model_prefix: model names starting with this use the rule (longest prefix wins).
        min_tokens: shortest prefix the provider caches.
        read_multiplier: price of a cached input token relative to an uncached one.
        write_multiplier: price of writing a token to the cache relative to an uncached one.
        max_breakpoints: explicit cache breakpoints allowed per request (None: automatic caching).
        increment: cached prefixes grow in steps of this many tokens (0: no step).
    """

    provider: Provider
    model_prefix: str
    min_tokens: int
    read_multiplier: float
    write_multiplier: float = 1.0
    max_breakpoints: int | None = None
    increment: int = 0


def _anthropic(prefix: str, min_tokens: int) -> PrefixCacheRule:
    return PrefixCacheRule("anthropic", prefix, min_tokens, 0.1, 1.25, 4)


def _openai(prefix: str, read_multiplier: float) -> PrefixCacheRule:
    return PrefixCacheRule("openai", prefix, 1024, read_multiplier, 1.0, None, 128)


_RULES: tuple[PrefixCacheRule, ...] = (
    # Anthropic: minimum cacheable prompt length per model.
    _anthropic("claude-opus-4-6", 4096),
    _anthropic("claude-opus-4-5", 4096),
    _anthropic("claude-haiku-4-5", 4096),
    _anthropic("claude-sonnet-4-6", 2048),
    _anthropic("claude-3-5-haiku", 2048),
    _anthropic("claude-3-haiku", 2048),
    _anthropic("claude-sonnet-4-5", 1024),
    _anthropic("claude-opus-4-1", 1024),
    _anthropic("claude-opus-4", 1024),
    _anthropic("claude-sonnet-4", 1024),
    _anthropic("claude-3-7-sonnet", 1024),
    _anthropic("claude-3-opus", 1024),
    # Unknown Claude models: the smallest documented minimum. A breakpoint below a model's
    # minimum is ignored by the API (no error, no charge), so erring low loses nothing.
    _anthropic("claude", 1024),
    # OpenAI: cached input price relative to input price.
    _openai("gpt-5", 0.1),
    _openai("gpt-4.1", 0.25),
    _openai("o3", 0.25),
    _openai("o4-mini", 0.25),
    _openai("gpt-4o", 0.5),
    _openai("o1", 0.5),
    _openai("gpt-", 0.5),
)


def prefix_cache_rule(model: str) -> PrefixCacheRule | None:
    """The prefix-cache rule for ``model``, or None for a model no provider rule covers.

    Example:
        >>> prefix_cache_rule("claude-haiku-4-5-20251001").min_tokens
        4096
        >>> prefix_cache_rule("gpt-4o-mini").read_multiplier
        0.5
    """
    name = model.split("/")[-1].strip().lower()
    best: PrefixCacheRule | None = None
    for rule in _RULES:
        if name.startswith(rule.model_prefix) and (
            best is None or len(rule.model_prefix) > len(best.model_prefix)
        ):
            best = rule
    return best
