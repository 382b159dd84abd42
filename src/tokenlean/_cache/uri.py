"""Choosing a cache store by URI: ``memory://``, ``sqlite:///path/file.db``, ``redis://…``."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenlean._cache.memory_store import MemoryStore
from tokenlean._cache.redis_store import FEED_LENGTH, RedisStore
from tokenlean._cache.sqlite_store import SQLiteStore
from tokenlean._cache.store import CacheStore
from tokenlean._errors import ConfigurationError
from tokenlean._redis_client import DEFAULT_PREFIX, refuse_masked_password

__all__ = ["SCHEMES", "open_store", "store_from"]

SCHEMES = ("memory://", "sqlite:///", "redis://", "rediss://", "unix://")
"""The URI forms :func:`open_store` accepts."""

_BOUNDS = ("max_entries", "max_bytes")


def _options(uri: str, query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"{uri!r}: unknown option {', '.join(unknown)}; this scheme takes "
            + (", ".join(allowed) or "no options")
        )
    return options


def _number(uri: str, name: str, text: str | None, kind: type[int] | type[float]) -> float | None:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise ConfigurationError(f"{uri!r}: {name} must be a number, got {text!r}") from None


def open_store(uri: str) -> CacheStore:
    """The cache store a URI names.

    - ``memory://`` — a :class:`MemoryStore` in this process.
    - ``sqlite:///cache.db`` (relative path) or ``sqlite:////var/cache/app.db`` (absolute) —
      a :class:`SQLiteStore` in that file.
    - ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS, ``unix:///path.sock``) —
      a :class:`RedisStore`, shared by every process that opens it; ``?prefix=myapp:`` sets
      its key prefix (default ``tokenlean:``), ``?timeout_s=`` its timeout and
      ``?feed_length=`` the records its change feed keeps; other options are passed to
      redis-py.

    Every scheme takes ``?max_entries=`` and ``?max_bytes=``. A store's ``uri`` is the URI
    that reopens it, its password masked as ``***``.

    Raises:
        ConfigurationError: an unknown scheme (the message lists the accepted ones), an
            unknown option or a bad value; or a password masked as ``***`` (a store's ``uri``
            as serialized), before any connection: give the URI back with its password.
        MissingDependencyError: a ``redis://`` URI without redis-py (``tokenlean[redis]``).
        StoreError: the store cannot be opened (see each store).

    Example:
        >>> open_store("memory://?max_entries=100").max_entries
        100
    """
    refuse_masked_password(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "memory" and not parts.netloc and parts.path in ("", "/"):
        options = _options(uri, parts.query, _BOUNDS)
        return MemoryStore(
            max_entries=_int(uri, "max_entries", options.get("max_entries")),
            max_bytes=_int(uri, "max_bytes", options.get("max_bytes")),
        )
    if scheme == "sqlite" and not parts.netloc and len(parts.path) > 1:
        options = _options(uri, parts.query, _BOUNDS)
        return SQLiteStore(
            parts.path[1:],  # sqlite:///relative.db, sqlite:////absolute.db
            max_entries=_int(uri, "max_entries", options.get("max_entries")),
            max_bytes=_int(uri, "max_bytes", options.get("max_bytes")),
        )
    if scheme in ("redis", "rediss", "unix"):
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        names = (*_BOUNDS, "prefix", "timeout_s", "feed_length")
        ours = {name: options.pop(name) for name in names if name in options}
        server = urlunsplit(parts._replace(query=urlencode(options)))
        timeout = _number(uri, "timeout_s", ours.get("timeout_s"), float)
        return RedisStore(
            server,
            prefix=ours.get("prefix", DEFAULT_PREFIX),
            max_entries=_int(uri, "max_entries", ours.get("max_entries")),
            max_bytes=_int(uri, "max_bytes", ours.get("max_bytes")),
            timeout_s=1.0 if timeout is None else timeout,
            feed_length=_int(uri, "feed_length", ours.get("feed_length")) or FEED_LENGTH,
        )
    raise ConfigurationError(
        f"not a cache store URI: {uri!r}; the accepted forms are memory://, "
        "sqlite:///path/file.db and redis://host:port/db"
    )


def _int(uri: str, name: str, text: str | None) -> int | None:
    value = _number(uri, name, text, int)
    return None if value is None else int(value)


def store_from(store: object) -> CacheStore:
    """A cache's store argument as a store: a :class:`CacheStore` as is, a URI opened
    (:func:`open_store`), None the in-memory default.

    Raises:
        ConfigurationError: anything else (named with its type), or a bad URI.
    """
    if store is None:
        return MemoryStore()
    if isinstance(store, str):
        return open_store(store)
    if not isinstance(store, CacheStore):
        raise ConfigurationError(
            "store must be a CacheStore or a store URI (memory://, sqlite:///path.db, "
            f"redis://host:port/db), not {type(store).__name__}"
        )
    return store
