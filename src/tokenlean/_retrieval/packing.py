"""Packing retrieved chunks into a hard token budget, with source markers and a drop report.

The packed context never exceeds the budget as measured by the configured token counter: the
rendered text (markers, separators and all) is counted, and the last item is removed until it
fits. Items are taken in relevance order; one that does not fit whole is trimmed to its
sentences that share terms with the query (most relevant first, as many as fit), when at least
``min_trim_tokens`` of room is left, and skipped otherwise (a later, smaller item may still fit).
Every candidate left out is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenlean._errors import ConfigurationError
from tokenlean._retrieval.documents import key_terms, split_sentences
from tokenlean._retrieval.search import ScoredChunk
from tokenlean._tokens.counting import get_token_counter

__all__ = ["DroppedItem", "PackedContext", "PackedItem", "pack_chunks"]

Order = Literal["edges", "score", "document"]
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PackedItem:
    """A chunk in the packed context: its text as sent (possibly trimmed) and where it came from."""

    chunk_id: str
    doc_id: str
    position: int
    score: float
    text: str
    tokens: int
    trimmed: bool
    marker: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DroppedItem:
    """A candidate left out of the packed context, and why."""

    chunk_id: str
    doc_id: str
    score: float
    tokens: int
    reason: str


@dataclass(frozen=True)
class PackedContext:
    """The result of packing: what went in (in render order), what did not, and the text."""

    items: tuple[PackedItem, ...]
    dropped: tuple[DroppedItem, ...]
    budget: int
    tokens: int
    text: str

    @property
    def doc_ids(self) -> list[str]:
        """Documents with text in the context, in render order, without repeats."""
        return list(dict.fromkeys(item.doc_id for item in self.items))


def _trim(text: str, query: str, room: int, count: Callable[[str], int]) -> str | None:
    """The sentences of ``text`` that share terms with the query, most relevant first while
    they fit in ``room`` tokens, kept in document order; the lead sentence when none does."""
    spans = list(split_sentences(text))
    if len(spans) < 2:
        return None
    terms = key_terms(query)
    scored = []
    for index, (start, end) in enumerate(spans):
        sentence = text[start:end]
        overlap = len(terms & key_terms(sentence))
        scored.append((overlap, -index, index, sentence))
    relevant = [item for item in sorted(scored, reverse=True) if item[0] > 0] or [scored[0]]
    chosen: list[tuple[int, str]] = []
    for _, _, index, sentence in relevant:
        candidate = sorted([*chosen, (index, sentence)])
        if count(" ".join(s for _, s in candidate)) <= room:
            chosen = candidate
    if not chosen or len(chosen) == len(spans):
        return None
    return " ".join(sentence for _, sentence in chosen)


def _render(items: Sequence[PackedItem]) -> str:
    return SEPARATOR.join(f"{item.marker}\n{item.text}" for item in items)


def _ordered(items: list[PackedItem], order: Order) -> list[PackedItem]:
    if order == "score":
        return items
    if order == "document":
        return sorted(items, key=lambda i: (i.doc_id, i.position))
    # "edges": the most relevant first and last, the least relevant in the middle, where models
    # attend least ("lost in the middle").
    front: list[PackedItem] = []
    back: list[PackedItem] = []
    for index, item in enumerate(items):
        (front if index % 2 == 0 else back).append(item)
    return front + back[::-1]


def pack_chunks(
    candidates: Sequence[ScoredChunk],
    budget: int,
    *,
    query: str = "",
    counter: Callable[[str], int] | None = None,
    k: int | None = None,
    trim: bool = True,
    min_trim_tokens: int = 24,
    order: Order = "edges",
) -> PackedContext:
    """Pack ranked chunks into ``budget`` tokens.

    Args:
        candidates: chunks in relevance order (best first).
        budget: the hard limit, in tokens of ``counter``, for the whole rendered text.
        query: used to trim chunks to their most relevant sentences.
        counter: token counter (default: the default tiktoken counter).
        k: at most this many items (None: as many as fit).
        trim: allow trimming a chunk that does not fit whole.
        min_trim_tokens: smallest trimmed piece worth including.
        order: ``"edges"`` (most relevant at both ends), ``"score"`` or ``"document"``.

    Raises:
        ConfigurationError: a negative budget or an unknown order.

    Example:
        >>> from tokenlean._retrieval.documents import Chunk
        >>> chunk = Chunk("d#0", "d", 0, "Refunds take five days.", 0, 23)
        >>> packed = pack_chunks([ScoredChunk(chunk, 1.0, 1.0, 1.0)], budget=50)
        >>> packed.text
        '[1] (source: d#0)\\nRefunds take five days.'
    """
    if budget < 0:
        raise ConfigurationError(f"budget must be >= 0, got {budget}")
    if order not in ("edges", "score", "document"):
        raise ConfigurationError(f"order must be edges, score or document, not {order!r}")
    count = counter or get_token_counter()
    separator_tokens = count(SEPARATOR)
    items: list[PackedItem] = []
    dropped: list[DroppedItem] = []
    used = 0
    for candidate in candidates:
        chunk = candidate.chunk
        chunk_tokens = count(chunk.text)
        if k is not None and len(items) >= k:
            dropped.append(DroppedItem(chunk.id, chunk.doc_id, candidate.score, chunk_tokens,
                                       f"beyond k={k}"))  # fmt: skip
            continue
        marker = f"[{len(items) + 1}] (source: {chunk.id})"
        overhead = count(marker + "\n") + (separator_tokens if items else 0)
        room = budget - used - overhead
        text, trimmed = chunk.text, False
        if chunk_tokens > room:
            shorter = (
                _trim(chunk.text, query, room, count) if trim and room >= min_trim_tokens else None
            )
            if shorter is None:
                reason = f"needs {chunk_tokens} tokens, {max(room, 0)} left"
                dropped.append(
                    DroppedItem(chunk.id, chunk.doc_id, candidate.score, chunk_tokens, reason)
                )
                continue
            text, trimmed = shorter, True
        tokens = count(text) if trimmed else chunk_tokens
        items.append(
            PackedItem(
                chunk.id,
                chunk.doc_id,
                chunk.position,
                candidate.score,
                text,
                tokens,
                trimmed,
                marker,
                chunk.metadata,
            )
        )
        used += tokens + overhead
    ordered = _ordered(items, order)
    rendered = _render(ordered)
    total = count(rendered)
    # Token counts of concatenations can differ from the sum of the parts: verify, and remove
    # the least relevant items until the rendered text fits.
    while items and total > budget:
        last = items.pop()
        dropped.append(DroppedItem(last.chunk_id, last.doc_id, last.score, last.tokens,
                                   "over budget once rendered"))  # fmt: skip
        ordered = _ordered(items, order)
        rendered = _render(ordered)
        total = count(rendered)
    return PackedContext(tuple(ordered), tuple(dropped), budget, total if items else 0, rendered)
