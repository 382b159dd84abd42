"""In-memory cache store: a dict in least-recently-used order, guarded by a lock."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from urllib.parse import urlencode

from tokenlean._cache.store import Selector, StoredEntry
from tokenlean._errors import ConfigurationError, StoreError

__all__ = ["MemoryStore"]


class MemoryStore:
    """A process-local store, bounded by entry count and bytes (LRU eviction). Thread-safe.

    Args:
        max_entries: most entries held (None: unbounded).
        max_bytes: most bytes of payload, vectors and features held (None: unbounded).

    Example:
        >>> store = MemoryStore(max_entries=2)
        >>> _ = [store.put(StoredEntry("ns", k, b"v", 0.0)) for k in "abc"]
        >>> store.usage()
        (2, 2)
    """

    def __init__(self, *, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        for name, value in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be >= 1 or None, got {value}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], StoredEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(32)
        self._closed = False

    @property
    def secret(self) -> bytes:
        return self._secret

    @property
    def uri(self) -> str:
        """The URI :func:`tokenlean.open_store` opens a store like this one from: ``memory://``
        with its bounds. The entries live in this process only: the store it opens is a new,
        empty one.

        Example:
            >>> MemoryStore(max_entries=100).uri
            'memory://?max_entries=100'
            >>> MemoryStore().uri
            'memory://'
        """
        bounds = (("max_entries", self.max_entries), ("max_bytes", self.max_bytes))
        query = urlencode([(name, value) for name, value in bounds if value is not None])
        return "memory://" + (f"?{query}" if query else "")

    def _check(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def get(self, namespace: str, key: str) -> StoredEntry | None:
        with self._lock:
            self._check()
            entry = self._entries.get((namespace, key))
            if entry is not None:
                self._entries.move_to_end((namespace, key))
            return entry

    def put(self, entry: StoredEntry) -> list[tuple[str, str]]:
        address = (entry.namespace, entry.key)
        with self._lock:
            self._check()
            old = self._entries.pop(address, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[address] = entry
            self._bytes += entry.size
            evicted: list[tuple[str, str]] = []
            while len(self._entries) > 1 and (
                (self.max_entries is not None and len(self._entries) > self.max_entries)
                or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                victim, removed = self._entries.popitem(last=False)
                self._bytes -= removed.size
                evicted.append(victim)
            return evicted

    def delete(self, selector: Selector) -> list[tuple[str, str]]:
        with self._lock:
            self._check()
            if selector.namespace is not None and selector.key is not None:
                entry = self._entries.get((selector.namespace, selector.key))
                chosen = (
                    [(selector.namespace, selector.key)]
                    if entry and selector.matches(entry)
                    else []
                )
            else:
                chosen = [address for address, e in self._entries.items() if selector.matches(e)]
            for address in chosen:
                self._bytes -= self._entries.pop(address).size
            return chosen

    def scan(self, layer: str | None = None) -> Iterator[StoredEntry]:
        with self._lock:
            self._check()
            entries = [e for e in self._entries.values() if layer is None or e.layer == layer]
        yield from entries

    def usage(self) -> tuple[int, int]:
        with self._lock:
            return len(self._entries), self._bytes

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._entries.clear()
            self._bytes = 0

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries}, max_bytes={self.max_bytes})"
