"""Per-call cache options: skip the cache, or keep one answer for a shorter or longer time.

:func:`cache_options` sets them for the calls made inside it (a context variable, so each
thread and asyncio task has its own); every :class:`~tokenlean.CompletionCache` honours them.
The framework adapters map their own per-call conventions onto it (LangChain run metadata,
LlamaIndex keyword arguments).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

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


_OPTIONS: ContextVar[CallOptions | None] = ContextVar("tokenlean_cache_options", default=None)


def current_options() -> CallOptions | None:
    """The options set by the innermost :func:`cache_options` around this call, if any."""
    return _OPTIONS.get()


@contextmanager
def cache_options(*, bypass: bool = False, ttl_s: float | None = None) -> Iterator[CallOptions]:
    """Per-call cache options for the calls made inside the block.

    Raises:
        ConfigurationError: a TTL that is not positive.

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
    if ttl_s is not None and not ttl_s > 0:
        raise ConfigurationError(f"ttl_s must be positive, not {ttl_s}")
    options = CallOptions(bypass=bypass, ttl_s=ttl_s)
    token = _OPTIONS.set(options)
    try:
        yield options
    finally:
        _OPTIONS.reset(token)
