"""A transcript store that fails on demand (see :mod:`tokenlean.testing`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from tokenlean._errors import StoreBackendError
from tokenlean._memory.transcript import Turn
from tokenlean._memory.transcript_memory import MemoryTranscriptStore

__all__ = ["FaultyTranscriptStore"]


class FaultyTranscriptStore(MemoryTranscriptStore):
    """An in-memory transcript store whose writes (``writes_down``) or every call (``down``)
    raise :class:`~tokenlean.StoreBackendError`, as a full disk or a lost server would: for
    testing what an app does when its memory store fails, and that nothing is lost once it
    answers again. Set the flags at any time.

    Example:
        >>> from tokenlean import ConversationMemory, StoreBackendError
        >>> from tokenlean.testing import HashingEmbedder
        >>> store = FaultyTranscriptStore()
        >>> memory = ConversationMemory(store, embedder=HashingEmbedder())
        >>> store.writes_down = True
        >>> try:
        ...     memory.add("s", [{"role": "user", "content": "Hello"}])
        ... except StoreBackendError as exc:
        ...     print(exc)
        write failed (FaultyTranscriptStore.writes_down)
        >>> store.writes_down = False
        >>> [t.content for t in memory.add("s", [{"role": "user", "content": "Hello"}])]
        ['Hello']
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes_down = False
        self.down = False

    def _check(self, write: bool = False) -> None:
        if self.down:
            raise StoreBackendError("server down (FaultyTranscriptStore.down)")
        if write and self.writes_down:
            raise StoreBackendError("write failed (FaultyTranscriptStore.writes_down)")

    def append(self, tenant: str, session: str, turns: Sequence[Turn]) -> None:
        self._check(write=True)
        super().append(tenant, session, turns)

    def turns(
        self, tenant: str, session: str, start: int = 0, end: int | None = None
    ) -> list[Turn]:
        self._check()
        return super().turns(tenant, session, start, end)

    def count(self, tenant: str, session: str) -> int:
        self._check()
        return super().count(tenant, session)

    def find(self, tenant: str, session: str, ids: Collection[str]) -> list[Turn]:
        self._check()
        return super().find(tenant, session, ids)

    def get_state(self, tenant: str, session: str, name: str) -> Any:
        self._check()
        return super().get_state(tenant, session, name)

    def put_state(self, tenant: str, session: str, name: str, value: Any) -> None:
        self._check(write=True)
        super().put_state(tenant, session, name, value)

    def update_state(
        self, tenant: str, session: str, name: str, change: Callable[[Any], Any]
    ) -> Any:
        self._check(write=True)
        return super().update_state(tenant, session, name, change)

    def get_vectors(self, tenant: str, session: str, keys: Collection[str]) -> dict[str, bytes]:
        self._check()
        return super().get_vectors(tenant, session, keys)

    def put_vectors(self, tenant: str, session: str, vectors: Mapping[str, bytes]) -> None:
        self._check(write=True)
        super().put_vectors(tenant, session, vectors)
