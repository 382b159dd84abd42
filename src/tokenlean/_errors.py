"""Every error tokenlean raises, in one tree.

Each class also subclasses the built-in exception a caller would naturally catch, so code that
already handles ``ValueError`` or ``ImportError`` keeps working::

    TokenleanError
    ├── ConfigurationError          (ValueError)   a setting or argument is invalid
    ├── MissingDependencyError      (ImportError)  an optional extra is not installed
    ├── InvalidInputError           (ValueError)   input that cannot be processed as given
    │   ├── InputDecodeError                       bytes that are not valid UTF-8
    │   ├── InputTooLargeError                     input above the configured size limit
    │   ├── MalformedRequestError                  a chat request that is not valid JSON or
    │   │                                          does not have the chat-request shape
    │   └── NotSerializableError   (TypeError)     a value with no deterministic JSON form
    ├── TokenizerUnavailableError   (RuntimeError) no tokenizer could be loaded
    ├── EmbeddingError              (RuntimeError) the embedding model failed to load or run
    ├── BatchError                  (RuntimeError) the micro-batcher refused a request
    │   ├── BatchQueueFullError                    its queue is full and overflow is "reject"
    │   └── BatchClosedError                       it was shut down before the request ran
    └── StoreError                  (RuntimeError) a cache store failed
        ├── CorruptedStoreError                    the store's file is damaged or unreadable
        ├── ForeignStoreError                      the file is not a tokenlean store of this
        │                                          schema; it is never modified
        ├── StoreReadOnlyError                     the store cannot be written
        ├── StoreFullError                         the disk or the store's quota is full
        ├── StoreLockedError                       another connection held the lock too long
        ├── StoreClosedError                       the store was closed before the operation
        └── StoreBackendError                      a store raised an exception of its own

Third-party exceptions are wrapped where tokenlean calls the library, keeping the original as
``__cause__``. A store error's message names the file (or the store's server).
"""

from __future__ import annotations

__all__ = [
    "BatchClosedError",
    "BatchError",
    "BatchQueueFullError",
    "ConfigurationError",
    "CorruptedStoreError",
    "EmbeddingError",
    "ForeignStoreError",
    "InputDecodeError",
    "InputTooLargeError",
    "InvalidInputError",
    "MalformedRequestError",
    "MissingDependencyError",
    "NotSerializableError",
    "StoreBackendError",
    "StoreClosedError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "TokenizerUnavailableError",
    "TokenleanError",
]


class TokenleanError(Exception):
    """Base class of every error raised by tokenlean."""


class ConfigurationError(TokenleanError, ValueError):
    """A setting, environment variable or constructor argument is invalid."""


class MissingDependencyError(TokenleanError, ImportError):
    """An optional dependency is missing; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'tokenlean[{extra}]'",
            name=package,
        )


class InvalidInputError(TokenleanError, ValueError):
    """Input that tokenlean cannot process as given."""


class InputDecodeError(InvalidInputError):
    """Input bytes are not valid UTF-8."""


class InputTooLargeError(InvalidInputError):
    """Input is larger than the configured limit."""


class MalformedRequestError(InvalidInputError):
    """A chat request is not valid JSON, or does not have the shape of a chat request."""


class NotSerializableError(InvalidInputError, TypeError):
    """A value has no deterministic JSON form (for example a set, a NaN or a custom object)."""


class TokenizerUnavailableError(TokenleanError, RuntimeError):
    """No tokenizer could be loaded and the approximate fallback was disabled."""


class EmbeddingError(TokenleanError, RuntimeError):
    """The embedding model could not be loaded or failed while encoding."""


class BatchError(TokenleanError, RuntimeError):
    """The micro-batcher could not accept or run a request."""


class BatchQueueFullError(BatchError):
    """The scheduler's queue is full and its overflow policy is ``"reject"``."""


class BatchClosedError(BatchError):
    """The scheduler was shut down before this request ran."""


class StoreError(TokenleanError, RuntimeError):
    """A cache store could not complete an operation; the original error is the cause."""


class CorruptedStoreError(StoreError):
    """The store's file is damaged or is not a database at all. It is left untouched."""


class ForeignStoreError(StoreError):
    """The file is a database, but not a tokenlean store of a schema this version reads.

    tokenlean never writes to such a file: move it away or point the store elsewhere.
    """


class StoreReadOnlyError(StoreError):
    """The store cannot be written: a read-only file, folder or file system. Reads may still
    work."""


class StoreFullError(StoreError):
    """The disk, or the store's own size quota, is full."""


class StoreLockedError(StoreError):
    """Another connection held the store's lock longer than the store waits."""


class StoreClosedError(StoreError):
    """The store was closed before the operation."""


class StoreBackendError(StoreError):
    """A store raised an exception that is not a :class:`StoreError` (a custom backend's own
    error, a lost connection); that exception is the cause."""
