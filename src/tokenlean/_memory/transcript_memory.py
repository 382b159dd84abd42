"""``MemoryTranscriptStore``: transcripts in process memory (the default; lost at exit)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tokenlean._memory.transcript import Turn, check_continuation, encode_state, encode_turn

__all__ = ["MemoryTranscriptStore"]


class MemoryTranscriptStore:
    """Transcripts in process memory. Thread-safe; turns are checked as a persistent store
    would check them, so switching to :class:`SQLiteTranscriptStore` changes no behaviour.

    Example:
        >>> from tokenlean import MemoryTranscriptStore, Turn
        >>> store = MemoryTranscriptStore()
        >>> store.append(
        ...     "acme",
        ...     "ticket-42",
        ...     [
        ...         Turn("t0", 0, "user", "Where is order 1234?", 1.0),
        ...         Turn("t1", 1, "assistant", "It left Lyon today.", 2.0),
        ...     ],
        ... )
        >>> [(t.id, t.content) for t in store.turns("acme", "ticket-42")]
        [('t0', 'Where is order 1234?'), ('t1', 'It left Lyon today.')]
        >>> store.count("acme", "ticket-42"), store.turns("acme", "ticket-42", start=1)[0].id
        (2, 't1')
        >>> store.turns("acme", "another-session")
        []
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[tuple[str, str], list[Turn]] = {}
        self._ids: dict[tuple[str, str], dict[str, int]] = {}  # id -> index
        self._state: dict[tuple[str, str, str], str] = {}
        self._vectors: dict[tuple[str, str], dict[str, bytes]] = {}

    @property
    def uri(self) -> str:
        """The URI :func:`tokenlean.open_transcript_store` opens a store like this one from:
        ``memory://``. The transcripts live in this process only: the store it opens is a new,
        empty one.

        Example:
            >>> MemoryTranscriptStore().uri
            'memory://'
        """
        return "memory://"

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        batch = list(turns)
        for turn in batch:
            encode_turn(turn)
        key = (tenant, session)
        with self._lock:
            stored = self._turns.setdefault(key, [])
            ids = self._ids.setdefault(key, {})
            check_continuation(len(stored), batch, ids.keys())
            stored.extend(batch)
            ids.update((turn.id, turn.index) for turn in batch)

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        with self._lock:
            return self._turns.get((tenant, session), [])[start:end]

    def count(self, tenant: str, session: str) -> int:
        with self._lock:
            return len(self._turns.get((tenant, session), ()))

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        key = (tenant, session)
        with self._lock:
            known, stored = self._ids.get(key, {}), self._turns.get(key, [])
            return [stored[i] for i in sorted({known[t] for t in ids if t in known})]

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        with self._lock:
            raw = self._state.get((tenant, session, name))
        return json.loads(raw) if raw is not None else None

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        raw = encode_state(value)
        with self._lock:
            self._state[(tenant, session, name)] = raw

    def update_state(
        self, tenant: str, session: str, name: str, change: Callable[[Any], Any]
    ) -> Any:
        """Replace a piece of state with ``change(current)`` under the store's lock: no
        concurrent update is lost. Returns the value stored."""
        with self._lock:
            raw = self._state.get((tenant, session, name))
            value = change(json.loads(raw) if raw is not None else None)
            self._state[(tenant, session, name)] = encode_state(value)
        return value

    def get_vectors(self, tenant: str, session: str, keys: Collection[str]) -> dict[str, bytes]:
        """Stored turn embeddings by key (unknown keys skipped)."""
        with self._lock:
            stored = self._vectors.get((tenant, session), {})
            return {key: stored[key] for key in keys if key in stored}

    def put_vectors(self, tenant: str, session: str, vectors: Mapping[str, bytes]) -> None:
        """Store turn embeddings by key (replacing a key's previous value)."""
        values = {str(key): bytes(value) for key, value in vectors.items()}
        with self._lock:
            self._vectors.setdefault((tenant, session), {}).update(values)
