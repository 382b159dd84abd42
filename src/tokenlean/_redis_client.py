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
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

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

__all__ = ["DEFAULT_PREFIX", "DEFAULT_URL", "RedisConnection"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "tokenlean:"
_MESSAGE_CHARS = 300  # of redis-py's own message, in ours

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
        ConfigurationError: the URL is not a Redis URL, or a timeout is not positive.
    """

    def __init__(self, url: str, *, what: str, timeout_s: float, retries: int) -> None:
        require("redis", what=what)
        if timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ConfigurationError(f"retries must be >= 0, got {retries}")
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
        self._errors: Any = importlib.import_module("redis.exceptions")
        self.closed = False

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
