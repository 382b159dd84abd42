"""Choosing a transcript store by URI: ``memory://``, ``sqlite:///path/file.db``, ``redis://…``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenlean._errors import ConfigurationError
from tokenlean._memory.transcript import TranscriptStore
from tokenlean._memory.transcript_memory import MemoryTranscriptStore
from tokenlean._memory.transcript_redis import RedisTranscriptStore
from tokenlean._memory.transcript_sqlite import SQLiteTranscriptStore
from tokenlean._redis_client import DEFAULT_PREFIX, refuse_masked_password

__all__ = ["CACHE_OPTIONS", "open_transcript_store", "transcript_store_from"]

CACHE_OPTIONS = ("max_entries", "max_bytes", "feed_length")
"""Options of a cache store's URI that a transcript store ignores (it has no bounds)."""


def open_transcript_store(uri: str) -> TranscriptStore:
    """The transcript store a URI names.

    - ``memory://`` — a :class:`MemoryTranscriptStore` in this process.
    - ``sqlite:///memory.db`` (relative path) or ``sqlite:////var/lib/app/memory.db``
      (absolute) — a :class:`SQLiteTranscriptStore` in that file.
    - ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS, ``unix:///path.sock``) —
      a :class:`RedisTranscriptStore`, shared by every process that opens it; ``?prefix=myapp:``
      sets its key prefix (default ``tokenlean:``) and ``?timeout_s=`` its timeout; the cache
      stores' bounds (``max_entries``, ``max_bytes``, ``feed_length``) are ignored, so one URI
      serves a deployment's caches and memory (a transcript is never evicted); other options
      are passed to redis-py.

    A store's ``uri`` is the URI that reopens it, its password masked as ``***``.

    Raises:
        ConfigurationError: an unknown scheme (the message lists the accepted ones), or an
            option the scheme does not take; or a password masked as ``***`` (a store's
            ``uri`` as serialized), before any connection: give the URI back with its
            password.
        MissingDependencyError: a ``redis://`` URI without redis-py (``tokenlean[redis]``).
        StoreError: the store cannot be opened (see each store).

    Example:
        >>> type(open_transcript_store("memory://")).__name__
        'MemoryTranscriptStore'
    """
    refuse_masked_password(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("memory", "sqlite") and parts.query:
        raise ConfigurationError(f"{uri!r}: a {scheme}:// transcript store takes no options")
    if scheme == "memory" and not parts.netloc and parts.path in ("", "/"):
        return MemoryTranscriptStore()
    if scheme == "sqlite" and not parts.netloc and len(parts.path) > 1:
        return SQLiteTranscriptStore(parts.path[1:])  # sqlite:///relative, sqlite:////absolute
    if scheme in ("redis", "rediss", "unix"):
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        for cache_only in CACHE_OPTIONS:  # one URI serves a deployment's caches and memory
            options.pop(cache_only, None)
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        timeout = options.pop("timeout_s", "1.0")
        try:
            timeout_s = float(timeout)
        except ValueError:
            raise ConfigurationError(f"{uri!r}: timeout_s must be a number") from None
        server = urlunsplit(parts._replace(query=urlencode(options)))
        return RedisTranscriptStore(server, prefix=prefix, timeout_s=timeout_s)
    raise ConfigurationError(
        f"not a transcript store URI: {uri!r}; the accepted forms are memory://, "
        "sqlite:///path/file.db and redis://host:port/db"
    )


def transcript_store_from(store: object) -> TranscriptStore:
    """A memory's store argument as a store: a :class:`TranscriptStore` as is, a URI opened
    (:func:`open_transcript_store`), None the in-memory default.

    Raises:
        ConfigurationError: anything else (named with its type), or a bad URI.
    """
    if store is None:
        return MemoryTranscriptStore()
    if isinstance(store, str):
        return open_transcript_store(store)
    if not isinstance(store, TranscriptStore):
        raise ConfigurationError(
            "store must be a TranscriptStore or a store URI (memory://, sqlite:///path.db, "
            f"redis://host:port/db), not {type(store).__name__}"
        )
    return store
