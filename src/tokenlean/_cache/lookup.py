"""What a completion-cache lookup returns, and the replay of a cached text as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tokenlean._errors import ConfigurationError

__all__ = ["CacheLookup", "replay_stream"]


def replay_stream(text: str, chunk_chars: int = 16) -> Iterator[str]:
    """Yield a cached text in chunks, as a streamed response would arrive."""
    if chunk_chars < 1:
        raise ConfigurationError("chunk_chars must be >= 1")
    for start in range(0, len(text), chunk_chars):
        yield text[start : start + chunk_chars]


@dataclass(frozen=True)
class CacheLookup:
    """The outcome of a lookup.

    Attributes:
        hit: True when the cache answered.
        value: the cached value (None on a miss).
        layer: ``"exact"`` or ``"semantic"`` on a hit; the last layer consulted on a miss.
        similarity: cosine similarity of a semantic hit (1.0 for an exact one); on a semantic
            miss, the nearest entry's (None when the partition holds none).
        reason: why: ``"exact match"``, ``"miss"``, ``"bypass: …"``, ``"exploring: …"``, or
            why the best candidate was not served.
        lookup_id: an opaque id of a semantic hit, for :meth:`CompletionCache.feedback`.
        explored: True when a would-be semantic hit was sent to the model to be judged.
    """

    hit: bool
    value: Any = None
    layer: str | None = None
    similarity: float | None = None
    reason: str = "miss"
    lookup_id: str | None = None
    explored: bool = False

    def stream(self, chunk_chars: int = 16) -> Iterator[str]:
        """Replay a cached text (or a value's ``"content"``) as a stream of chunks."""
        text = self.value.get("content", "") if isinstance(self.value, Mapping) else self.value
        yield from replay_stream(str(text or ""), chunk_chars)

    async def astream(self, chunk_chars: int = 16) -> AsyncIterator[str]:
        """Async version of :meth:`stream`."""
        for chunk in self.stream(chunk_chars):
            yield chunk
