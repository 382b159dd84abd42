"""Store URIs safe to serialize: a built-in store described by the URI that reopens it, with
its password masked.

A serialized LlamaIndex component ends up in files and logs, so ``to_dict`` never writes a
credential: a password becomes ``***`` (``redis://default:***@host:6379/0?prefix=app:``).
A URI holding that mask is refused where a store would be opened, and the message says how to
give the credentials back (``from_dict(data, cache=...)``, ``from_dict(data, store=...)``).

A built-in store is described by its own ``uri``: the URI :func:`tokenlean.open_store` or
:func:`tokenlean.open_transcript_store` reopens it from (``memory://``,
``sqlite:////absolute/path.db``, ``redis://`` / ``rediss://`` / ``unix://`` with the key
prefix, bounds and timeout as query options), its password already masked by the core. Any
other store, a subclass of a built-in one included, has no description (None): the caller
says so instead of dropping it.
"""

from __future__ import annotations

from tokenlean import (
    ConfigurationError,
    MemoryStore,
    MemoryTranscriptStore,
    RedisStore,
    RedisTranscriptStore,
    SQLiteStore,
    SQLiteTranscriptStore,
    has_masked_password,
    mask_password,
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
"""What a serialized URI holds in place of a password (the core's store ``uri`` mask)."""

_CACHE_STORES = (MemoryStore, SQLiteStore, RedisStore)
_TRANSCRIPT_STORES = (MemoryTranscriptStore, SQLiteTranscriptStore, RedisTranscriptStore)


def mask_credentials(uri: str) -> str:
    """``uri`` with its password (in the user part, or a ``password``-like option) masked:
    :func:`tokenlean.mask_password`.

    Example:
        >>> mask_credentials("redis://default:S3cret@127.0.0.1:6379/9?prefix=app:")
        'redis://default:***@127.0.0.1:6379/9?prefix=app:'
    """
    return mask_password(uri)


def has_masked_credentials(uri: str) -> bool:
    """Whether ``uri`` carries the :data:`MASK` in place of a password:
    :func:`tokenlean.has_masked_password`."""
    return has_masked_password(uri)


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


def cache_store_uri(store: object) -> str | None:
    """The URI that reopens a built-in cache store with :func:`tokenlean.open_store` (its
    ``uri``: the password masked), or None for any other store.

    Example:
        >>> cache_store_uri(MemoryStore(max_entries=100))
        'memory://?max_entries=100'
    """
    if isinstance(store, _CACHE_STORES) and type(store) in _CACHE_STORES:
        return store.uri
    return None


def transcript_store_uri(store: object) -> str | None:
    """The URI that reopens a built-in transcript store with
    :func:`tokenlean.open_transcript_store` (its ``uri``: the password masked), or None for
    any other store.

    Example:
        >>> transcript_store_uri(MemoryTranscriptStore())
        'memory://'
    """
    if isinstance(store, _TRANSCRIPT_STORES) and type(store) in _TRANSCRIPT_STORES:
        return store.uri
    return None


def type_name(value: object) -> str:
    """A value's class as ``module.Class``, for messages."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"
