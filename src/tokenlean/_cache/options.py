"""Per-call cache options: skip the cache, or keep one answer for a shorter or longer time.

:func:`cache_options` sets them for the calls made inside it (a context variable, so each
thread and asyncio task has its own); every :class:`~tokenlean.CompletionCache` honours them.
The framework adapters map their own per-call conventions onto it (LangChain run metadata,
LlamaIndex keyword arguments).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tokenlean._errors import ConfigurationError

__all__ = ["CallOptions", "cache_options", "current_options"]


@dataclass(frozen=True)
class CallOptions:
    """What the calls inside :func:`cache_options` ask of the cache.

    Attributes:
        bypass: neither look up nor store (counted as ``bypassed`` in the stats).
        ttl_s: the lifetime of what these calls store, instead of the policy's TTL.
    """

    bypass: bool = False
    ttl_s: float | None = None

    def __post_init__(self) -> None:
        """Raises: ConfigurationError: a TTL that is not a positive number of seconds."""
        object.__setattr__(self, "ttl_s", _checked_ttl(self.ttl_s))


def _checked_ttl(ttl_s: Any) -> float | None:
    """A per-call TTL as seconds: None, or a positive finite number (a numeric string, as run
    metadata may carry, is read as one).

    Raises:
        ConfigurationError: anything else.
    """
    if ttl_s is None:
        return None
    try:
        seconds = float(ttl_s) if not isinstance(ttl_s, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ConfigurationError(f"ttl_s must be a positive number of seconds, not {ttl_s!r}")
    return seconds


_OPTIONS: ContextVar[CallOptions | None] = ContextVar("tokenlean_cache_options", default=None)


def current_options() -> CallOptions | None:
    """The options set by the innermost :func:`cache_options` around this call, if any."""
    return _OPTIONS.get()


@contextmanager
def cache_options(*, bypass: bool = False, ttl_s: float | None = None) -> Iterator[CallOptions]:
    """Per-call cache options for the calls made inside the block.

    Raises:
        ConfigurationError: a TTL that is not a positive number of seconds.

    Example:
        >>> from tokenlean import CacheRequest, CompletionCache
        >>> cache = CompletionCache()
        >>> request = CacheRequest(model="m", messages=({"role": "user", "content": "Hi"},))
        >>> with cache_options(bypass=True):
        ...     cache.store(request, "Hello!")
        False
        >>> with cache_options(ttl_s=60):
        ...     cache.store(request, "Hello!")
        True
        >>> cache.lookup(request).value, cache.stats().bypassed
        ('Hello!', 1)
    """
    options = CallOptions(bypass=bypass, ttl_s=ttl_s)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)
