"""Store faults: the caches fail open.

A cache's store can fail under it (a read-only or full file, a lock held too long, a damaged
page, a custom backend's lost connection). A cache never turns that into a failed model call: a
lookup that meets a store fault is a miss, a write that meets one is dropped. Both are counted
(``store_errors`` in :class:`~tokenlean.CacheStats` and, per layer, in the metrics collector)
and logged as a warning naming the store, at most once a minute per store, without any prompt
text.

:class:`GuardedStore` is the caches' view of their store: whatever the backend raises reaches
them as a typed :class:`~tokenlean.StoreError` (a :class:`~tokenlean.StoreBackendError` wrapping
an exception that is not one), so they catch store faults, and only store faults.
:class:`FaultReporter` counts and logs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from tokenlean._cache.stats import StatsRecorder
from tokenlean._cache.store import CacheStore, Selector, StoredEntry
from tokenlean._errors import StoreBackendError, StoreError

if TYPE_CHECKING:
    from tokenlean._metrics.collector import MetricsRecorder

__all__ = ["WARNING_INTERVAL_S", "FaultReporter", "GuardedStore"]

logger = logging.getLogger("tokenlean.cache")

WARNING_INTERVAL_S = 60.0
"""Least seconds between two warnings about the same store."""

_MESSAGE_CHARS = 300  # of a backend's own error message, in a wrapped error and in the log

_T = TypeVar("_T")
_now: Callable[[], float] = time.monotonic  # the rate limit's clock (tests move it)
_warned_lock = threading.Lock()
_warned: dict[str, float] = {}  # store name -> time of its last warning


class GuardedStore:
    """A cache store whose every failure is a typed :class:`StoreError` naming the store.

    Args:
        store: the backend.
    """

    def __init__(self, store: CacheStore) -> None:
        self.backend = store
        self.name = repr(store)

    @property
    def secret(self) -> bytes:
        return self.backend.secret

    def _call(self, operation: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:_MESSAGE_CHARS]
            raise StoreBackendError(f"{self.name}: {operation} failed: {detail}") from exc

    def get(self, namespace: str, key: str) -> StoredEntry | None:
        return self._call("get", lambda: self.backend.get(namespace, key))

    def put(self, entry: StoredEntry) -> list[tuple[str, str]]:
        return self._call("put", lambda: list(self.backend.put(entry)))

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        return self._call("delete", lambda: list(self.backend.delete(selector)))

    def scan(self, layer: str | None = None) -> Iterator[StoredEntry]:
        # Read it all here: a backend's iterator can fail half way, outside any guard.
        yield from self._call("scan", lambda: list(self.backend.scan(layer)))

    def usage(self) -> tuple[int, int]:
        return self._call("usage", self.backend.usage)

    def close(self) -> None:
        self._call("close", self.backend.close)

    def __repr__(self) -> str:
        return self.name


class FaultReporter:
    """Counts one cache's store faults and logs them, at most once a minute per store.

    Args:
        store: the name of the store (its ``repr``: the file, or the server).
        stats: the cache's counters (``store_errors``).
        collector: receives ``record_store_error(layer)`` for each fault, when it has it.
    """

    def __init__(self, store: str, stats: StatsRecorder, collector: MetricsRecorder | None) -> None:
        self.store, self._stats, self._collector = store, stats, collector
        self._count = 0
        self._lock = threading.Lock()

    def report(self, layer: str, outcome: str, error: StoreError) -> None:
        """Count ``error``, met by ``layer``, and warn (rate limited). ``outcome`` says what the
        cache did instead (``"a miss"``, ``"the write was dropped"``)."""
        self._stats.count(store_errors=1)
        record: Any = getattr(self._collector, "record_store_error", None)
        if record is not None:
            record(layer)
        with self._lock:
            self._count += 1
            count = self._count
        now = _now()
        with _warned_lock:
            last = _warned.get(self.store)
            if last is not None and now - last < WARNING_INTERVAL_S:
                return
            _warned[self.store] = now
        logger.warning(
            "tokenlean: cache store %s failed (%s: %s); %s, and the cache goes on without the "
            "store. %d store error(s) in this cache so far; the next warning for this store "
            "comes a minute from now at the earliest.",
            self.store,
            type(error).__name__,
            str(error)[:_MESSAGE_CHARS],
            outcome,
            count,
        )
