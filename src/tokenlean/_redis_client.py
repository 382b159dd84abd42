"""Connecting to a Redis server, and turning redis-py's errors into tokenlean's store errors.

Both Redis backends (the cache store and the transcript store) open their server here, so a
Redis URL means the same thing to both, redis-py is imported only when a Redis store is built
(``tokenlean[redis]``; without it, :class:`MissingDependencyError` names the extra), and every
redis-py exception is mapped to the :class:`StoreError` tree in one place, naming the server
(never its password) and keeping redis-py's exception as the cause:

- a lost or refused connection, a timeout, a server still loading: :class:`StoreBackendError`;
- a read-only replica: :class:`StoreReadOnlyError`;
- ``maxmemory`` reached under the ``noeviction`` policy: :class:`StoreFullError`;
- anything else redis-py raises: :class:`StoreError`.

It also keeps the URL it was given with any password masked as :data:`MASK` (in the user part
and in ``password``-like options), so a store can describe itself by the URI that reopens it
(its ``uri``) without ever writing a credential; :func:`refuse_masked_password` is how the store
openers refuse such a URI given back without its password.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit

from tokenlean._errors import (
    ConfigurationError,
    StoreBackendError,
    StoreClosedError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
)
from tokenlean._extras import require

if TYPE_CHECKING:
    import redis

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "MASK",
    "RedisConnection",
    "has_masked_password",
    "mask_password",
    "refuse_masked_password",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "tokenlean:"
_MESSAGE_CHARS = 300  # of redis-py's own message, in ours

MASK = "***"
"""What a store's ``uri`` holds in place of a password."""

_SAFE = ":/*"  # left readable in query values (prefixes such as ``app:``, the mask)


def _secret(option: str) -> bool:
    return "password" in unquote(option).lower()


def mask_password(url: str) -> str:
    """``url`` with its password (in the user part, or a ``password``-like option such as
    ``?password=`` or ``?ssl_password=``) replaced by :data:`MASK`; the rest is kept as written.

    Example:
        >>> mask_password("rediss://app:S3cret@cache.internal:6380/2?ssl_cert_reqs=none")
        'rediss://app:***@cache.internal:6380/2?ssl_cert_reqs=none'
        >>> mask_password("redis://cache.internal:6379/0?password=S3cret")
        'redis://cache.internal:6379/0?password=***'
    """
    # as redis-py reads it: urllib drops tabs and line breaks, and leading blanks
    url = "".join(c for c in url if c not in "\t\r\n").lstrip("".join(map(chr, range(33))))
    parts = urlsplit(url)
    if parts.password:  # an empty one is no password (redis-py sends none)
        userinfo, host = parts.netloc.rsplit("@", 1)
        masked = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
        url = url.replace(f"//{parts.netloc}", f"//{masked}", 1)
    head, question, query = url.partition("?")
    fields = []
    for field in query.split("&") if query else []:
        name, equals, _ = field.partition("=")
        fields.append(f"{name}={MASK}" if equals and _secret(name) else field)
    return head + question + "&".join(fields)


def has_masked_password(url: str) -> bool:
    """Whether ``url`` holds :data:`MASK` in place of a password (a store's ``uri`` whose
    password was removed).

    Example:
        >>> has_masked_password("redis://app:***@cache.internal:6379/0")
        True
        >>> has_masked_password("redis://app:S3cret@cache.internal:6379/0")
        False
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        if ":" in userinfo and unquote(userinfo.split(":", 1)[1]) == MASK:
            return True
    for field in parts.query.split("&") if parts.query else []:
        name, equals, value = field.partition("=")
        if equals and _secret(name) and unquote(value) == MASK:
            return True
    return False


def refuse_masked_password(uri: str) -> None:
    """Raise unless ``uri`` carries a real password (or none).

    Raises:
        ConfigurationError: ``uri`` holds :data:`MASK` in place of a password; the message
            names ``uri`` (any other password in it masked too) and says to give the password
            back.
    """
    if has_masked_password(uri):
        raise ConfigurationError(
            f"{mask_password(uri)}: the password was removed (replaced by {MASK}) when this "
            "store URI was serialized; give the URI back with its real password"
        )


def _query(options: Sequence[tuple[str, object]]) -> str:
    """``options`` as a URI query (``?name=value&…``, or ``""`` when there are none), leaving
    ``:``, ``/`` and ``*`` readable; an option whose value is None is left out."""
    query = urlencode([(n, str(v)) for n, v in options if v is not None], safe=_SAFE)
    return f"?{query}" if query else ""


_T = TypeVar("_T")


class RedisConnection:
    """One redis-py client, its server's printable name, and the error mapping.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS,
            ``unix:///path.sock?db=0`` for a socket).
        what: the object being built, for the missing-extra message (``"A RedisStore"``).
        timeout_s: seconds to connect, and to wait for each reply, before the operation fails.
        retries: times a command is retried on a fresh connection after a connection error
            (0 for writes that must not be repeated blindly).

    Raises:
        MissingDependencyError: redis-py is not installed (``tokenlean[redis]``).
        ConfigurationError: the URL is not a Redis URL (a database that is not a number
            included), carries a masked password (``***``, from a serialized URI), or a
            timeout is not positive.
    """

    def __init__(self, url: str, *, what: str, timeout_s: float, retries: int) -> None:
        require("redis", what=what)
        refuse_masked_password(url)  # else it would fail only at the first command
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ConfigurationError(f"retries must be >= 0, got {retries}")
        parts = urlsplit(url)
        if (
            parts.scheme in ("redis", "rediss")
            and parts.path.strip("/")
            and not (parts.path.strip("/").isdigit())
        ):  # redis-py would quietly use database 0
            raise ConfigurationError(
                f"not a Redis URL: the database in {mask_password(url)!r} is "
                f"{parts.path.strip('/')!r}, not a number (redis://host:port/0)"
            )
        module: Any = importlib.import_module("redis")
        backoff: Any = importlib.import_module("redis.backoff")
        retry: Any = importlib.import_module("redis.retry")
        try:
            self.client: redis.Redis = module.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=retry.Retry(backoff.NoBackoff(), retries),
                decode_responses=False,
            )
        except ValueError as exc:  # redis-py's message for a URL it cannot read
            raise ConfigurationError(f"not a Redis URL: {exc}") from exc
        pool = self.client.connection_pool
        kwargs = pool.connection_kwargs
        if "path" in kwargs:
            self.name = f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        else:
            host, port, db = kwargs.get("host"), kwargs.get("port"), kwargs.get("db", 0)
            self.name = f"redis://{host}:{port}/{db}"
        # redis-py passes a URL's unknown options to its connections, and fails only when the
        # first one is made: make one now (it does not connect), so a typo fails at start.
        try:
            pool.release(pool.make_connection())
        except TypeError as exc:
            raise ConfigurationError(
                f"{self.name}: the URL has an option neither tokenlean nor redis-py takes ({exc})"
            ) from None
        self.timeout_s = float(timeout_s)  # as a URI gives it back
        self._masked_url = mask_password(url.partition("#")[0])
        self._errors: Any = importlib.import_module("redis.exceptions")
        self.closed = False

    def uri(self, options: Sequence[tuple[str, object]]) -> str:
        """The URI that reopens a store on this server: the URL as given (scheme, user, host,
        port, db and redis-py options), its password masked, with the store's ``options``
        (``prefix``, bounds…; None values left out) first in the query."""
        head, _, given = self._masked_url.partition("?")
        ours = [*options, ("timeout_s", self.timeout_s)]
        query = _query(ours)
        if given:
            query = f"{query}&{given}" if query else f"?{given}"
        return head + query

    def call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (which talks to the server), mapping redis-py's errors to ours.

        Raises:
            StoreClosedError: the connection was closed.
            StoreError: the subclass matching redis-py's error, naming the server.
        """
        if self.closed:
            raise StoreClosedError(f"{self.name}: the store is closed")
        try:
            return fn()
        except self._errors.RedisError as exc:
            raise self.error(what, exc) from exc

    def error(self, what: str, exc: BaseException) -> StoreError:
        """Our error for redis-py's ``exc`` met during ``what`` (raise it ``from exc``)."""
        errors = self._errors
        detail = f"{type(exc).__name__}: {exc}"[:_MESSAGE_CHARS]
        message = f"Redis server {self.name}: {what} failed: {detail}"
        if isinstance(exc, errors.ReadOnlyError):
            return StoreReadOnlyError(message)
        if isinstance(exc, errors.OutOfMemoryError) or str(exc).startswith("OOM "):
            return StoreFullError(message)
        if isinstance(exc, errors.AuthenticationError):
            return StoreBackendError(f"{message} (check the URL's user and password)")
        if isinstance(exc, errors.ConnectionError | errors.TimeoutError | errors.BusyLoadingError):
            return StoreBackendError(
                f"{message} (is the server running? A Redis 7 server starts with "
                "`redis-server --port 6379 --daemonize yes`)"
            )
        return StoreError(message)

    def close(self) -> None:
        """Close the client's connections; later calls raise :class:`StoreClosedError`."""
        if not self.closed:
            self.closed = True
            self.client.close()
