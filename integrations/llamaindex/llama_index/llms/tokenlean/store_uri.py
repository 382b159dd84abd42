"""Store URIs safe to serialize: a built-in store described by the URI that reopens it, with
its password masked.

A serialized LlamaIndex component ends up in files and logs, so ``to_dict`` never writes a
credential: a password becomes ``***`` (``redis://default:***@host:6379/0?prefix=app:``).
A URI holding that mask is refused where a store would be opened, and the message says how to
give the credentials back (``from_dict(data, cache=...)``, ``from_dict(data, store=...)``).

The built-in stores are described by the URI forms :func:`tokenlean.open_store` and
:func:`tokenlean.open_transcript_store` read: ``memory://``, ``sqlite:////absolute/path.db``
and ``redis://`` / ``rediss://`` / ``unix://`` with the key prefix, bounds and timeout as
query options. Any other store, a subclass of a built-in one included, has no description
(None): the caller says so instead of dropping it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from tokenlean import (
    ConfigurationError,
    MemoryStore,
    MemoryTranscriptStore,
    RedisStore,
    RedisTranscriptStore,
    SQLiteStore,
    SQLiteTranscriptStore,
)

__all__ = [
    "MASK",
    "cache_store_uri",
    "has_masked_credentials",
    "mask_credentials",
    "refuse_masked",
    "transcript_store_uri",
    "type_name",
]

MASK = "***"
"""What a serialized URI holds in place of a password."""

_SAFE = ":/*"  # left readable in query values (prefixes such as ``app:``, the mask)
# redis-py's connection settings that the URI's own parts (or tokenlean) give, not its options
_NOT_OPTIONS = frozenset(
    {
        "host",
        "port",
        "db",
        "path",
        "username",
        "password",
        "socket_timeout",
        "socket_connect_timeout",
        "decode_responses",
        "retry",
        "connection_class",
    }
)


def _secret(option: str) -> bool:
    return "password" in option.lower()


def mask_credentials(uri: str) -> str:
    """``uri`` with its password (in the user part, or a ``password``-like option) masked.

    Example:
        >>> mask_credentials("redis://default:S3cret@127.0.0.1:6379/9?prefix=app:")
        'redis://default:***@127.0.0.1:6379/9?prefix=app:'
    """
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        if ":" in userinfo:
            masked = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
            uri = uri.replace(f"//{parts.netloc}", f"//{masked}", 1)
    options = parse_qsl(parts.query, keep_blank_values=True)
    if any(_secret(name) for name, _ in options):
        head = uri.partition("?")[0]
        masked_options = [(name, MASK if _secret(name) else value) for name, value in options]
        uri = f"{head}?{urlencode(masked_options, safe=_SAFE)}"
    return uri


def has_masked_credentials(uri: str) -> bool:
    """Whether ``uri`` carries the :data:`MASK` in place of a password."""
    parts = urlsplit(uri)
    if "@" in parts.netloc and parts.netloc.rsplit("@", 1)[0].endswith(f":{MASK}"):
        return True
    return any(
        _secret(name) and value == MASK
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )


def refuse_masked(uri: str, *, owner: str, remedy: str) -> None:
    """Raise unless ``uri`` carries real credentials (or none).

    Raises:
        ConfigurationError: ``uri`` holds the :data:`MASK` of a serialized password; the
            message names ``owner`` and the ``remedy``.
    """
    if has_masked_credentials(uri):
        raise ConfigurationError(
            f"{owner}: the store {uri} was serialized without its password (credentials are "
            f"never written); {remedy}"
        )


def _bounds(store: MemoryStore | SQLiteStore | RedisStore) -> list[tuple[str, str]]:
    return [
        (name, str(value))
        for name, value in (("max_entries", store.max_entries), ("max_bytes", store.max_bytes))
        if value is not None
    ]


def _sqlite(path: Path, options: list[tuple[str, str]]) -> str | None:
    text = str(path.absolute())
    if "?" in text or "#" in text:  # not expressible in a sqlite:/// URI
        return None
    query = urlencode(options, safe=_SAFE)
    return f"sqlite:///{text}" + (f"?{query}" if query else "")


def _redis(store: RedisStore | RedisTranscriptStore, options: list[tuple[str, str]]) -> str | None:
    """The server's URI (scheme, user, masked password, host, port, db and redis-py options)
    with ``options`` added, or None when the connection settings cannot be read."""
    # The stores expose only ``url`` (host, port and db, nothing about TLS, the user or a
    # password); those are read from redis-py's connection settings, so that a described URI
    # never reconnects without TLS or silently without the password.
    client = getattr(getattr(store, "_redis", None), "client", None)
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    settings: dict[str, Any] = dict(pool.connection_kwargs)
    user, password = settings.get("username"), settings.get("password")
    userinfo = quote(str(user or ""), safe="") + (f":{MASK}" if password else "")
    userinfo += "@" if userinfo else ""
    query: list[tuple[str, str]] = []
    if "path" in settings:
        base = f"unix://{userinfo}{settings['path']}"
        query.append(("db", str(settings.get("db", 0))))
    else:
        tls = any(cls.__name__ == "SSLConnection" for cls in pool.connection_class.__mro__)
        host = str(settings.get("host", "127.0.0.1"))
        host = f"[{host}]" if ":" in host else host
        base = (
            f"{'rediss' if tls else 'redis'}://{userinfo}{host}:{settings.get('port', 6379)}"
            f"/{settings.get('db', 0)}"
        )
    ours = {name for name, _ in options}
    for name, value in settings.items():
        if name in _NOT_OPTIONS or name in ours or name.startswith("orig_"):
            continue
        if isinstance(value, bool | int | float | str):
            query.append((name, MASK if _secret(name) else str(value)))
    timeout = settings.get("socket_timeout")
    if isinstance(timeout, int | float):
        options = [*options, ("timeout_s", str(float(timeout)))]
    return f"{base}?{urlencode([*options, *query], safe=_SAFE)}"


def cache_store_uri(store: object) -> str | None:
    """The URI that reopens a built-in cache store with :func:`tokenlean.open_store` (the
    password masked), or None for any other store.

    Example:
        >>> cache_store_uri(MemoryStore(max_entries=100))
        'memory://?max_entries=100'
    """
    if type(store) is MemoryStore:
        query = urlencode(_bounds(store), safe=_SAFE)
        return "memory://" + (f"?{query}" if query else "")
    if type(store) is SQLiteStore:
        return _sqlite(store.path, _bounds(store))
    if type(store) is RedisStore:
        options = [("prefix", store.prefix), *_bounds(store)]
        return _redis(store, [*options, ("feed_length", str(store.feed_length))])
    return None


def transcript_store_uri(store: object) -> str | None:
    """The URI that reopens a built-in transcript store with
    :func:`tokenlean.open_transcript_store` (the password masked), or None for any other store.

    Example:
        >>> transcript_store_uri(MemoryTranscriptStore())
        'memory://'
    """
    if type(store) is MemoryTranscriptStore:
        return "memory://"
    if type(store) is SQLiteTranscriptStore:
        return _sqlite(store.path, [])
    if type(store) is RedisTranscriptStore:
        return _redis(store, [("prefix", store.prefix)])
    return None


def type_name(value: object) -> str:
    """A value's class as ``module.Class``, for messages."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
