"""Documents, chunks and sentence-respecting chunking."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenlean._errors import ConfigurationError, InvalidInputError
from tokenlean._tokens.counting import get_token_counter

__all__ = ["Chunk", "Document", "SentenceSplitter", "key_terms", "split_sentences"]

_TERM = re.compile(r"[a-z0-9]+")


@functools.lru_cache(maxsize=1 << 14)
def key_terms(text: str) -> frozenset[str]:
    """Words of three letters or more, as six-letter prefixes (a cheap, robust stemmer): what
    reranking, trimming and summary selection compare between a query and a text.

    Cached: a conversation's turns are compared with every question asked of it."""
    return frozenset(w[:6] for w in _TERM.findall(text.lower()) if len(w) > 2)


@dataclass(frozen=True)
class Document:
    """A document to index: an id, its text and metadata (used by filters and kept as provenance).

    Raises:
        InvalidInputError: an empty id or a text that is not a string.
    """

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidInputError("a document needs a non-empty string id")
        if not isinstance(self.text, str):
            raise InvalidInputError(f"document {self.id!r}: text must be a string")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document, with its provenance.

    Attributes:
        id: ``"{doc_id}#{position}"``.
        doc_id: the document it came from.
        position: its index among the document's chunks.
        text: the chunk text (whole sentences).
        start: character offset of the chunk in the document.
        end: character offset just past the chunk.
        metadata: the document's metadata.
    """

    id: str
    doc_id: str
    position: int
    text: str
    start: int
    end: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


# A sentence ends at . ! ? (with closing quotes/brackets) followed by space and a capital, digit
# or opening quote; common abbreviations do not end one.
_ABBREVIATIONS = frozenset(
    [
        "e.g",
        "i.e",
        "etc",
        "al",
        "fig",
        "figs",
        "vs",
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "no",
        "vol",
        "approx",
        "cf",
        "resp",
        "st",
        "jr",
        "sr",
        "inc",
        "ltd",
        "co",
    ]
)
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n")


def split_sentences(text: str) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` spans of the sentences of ``text`` (paragraph breaks end one).

    Example:
        >>> text = "Dr. Smith arrived. He was late, e.g. by an hour! Done"
        >>> [text[a:b] for a, b in split_sentences(text)]
        ['Dr. Smith arrived.', 'He was late, e.g. by an hour!', 'Done']
    """
    start = 0
    for match in _BOUNDARY.finditer(text):
        head = text[start : match.start() + 1]
        word = re.search(r"([A-Za-z.]+)[.!?]$", head)
        if word and word.group(1).lower().rstrip(".") in _ABBREVIATIONS:
            continue
        end = match.start() + len(match.group().rstrip())
        if text[start:end].strip():
            yield _trimmed(text, start, end)
        start = match.end()
    if text[start:].strip():
        yield _trimmed(text, start, len(text))


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class SentenceSplitter:
    """Splits documents into chunks of whole sentences, each at most ``max_tokens`` long.

    A sentence longer than ``max_tokens`` becomes a chunk of its own, cut at word boundaries.
    ``overlap`` sentences are repeated at the start of the next chunk.

    Args:
        max_tokens: largest chunk, counted with ``counter``.
        overlap: sentences shared by consecutive chunks.
        counter: token counter (default: the default tiktoken counter).

    Example:
        >>> splitter = SentenceSplitter(max_tokens=8)
        >>> [c.text for c in splitter.split(Document("d", "One two three. Four five six. Seven."))]
        ['One two three. Four five six.', 'Seven.']
    """

    def __init__(
        self,
        max_tokens: int = 160,
        *,
        overlap: int = 0,
        counter: Callable[[str], int] | None = None,
    ) -> None:
        if max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be >= 1, got {max_tokens}")
        if overlap < 0:
            raise ConfigurationError(f"overlap must be >= 0, got {overlap}")
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.counter = counter or get_token_counter()

    def config(self) -> str:
        """A description of the settings, stored with a persisted index."""
        return f"sentences:max_tokens={self.max_tokens}:overlap={self.overlap}"

    def _pieces(self, text: str) -> Iterator[tuple[int, int]]:
        for start, end in split_sentences(text):
            if self.counter(text[start:end]) <= self.max_tokens:
                yield start, end
                continue
            piece_start = start  # an over-long sentence: cut at word boundaries
            words = list(re.finditer(r"\S+", text[start:end]))
            last = start
            for word in words:
                word_end = start + word.end()
                if (
                    self.counter(text[piece_start:word_end]) > self.max_tokens
                    and last > piece_start
                ):
                    yield piece_start, last
                    piece_start = start + word.start()
                last = word_end
            yield piece_start, end

    def split(self, document: Document) -> list[Chunk]:
        """The chunks of ``document`` (none for an empty or blank text)."""
        pieces = list(self._pieces(document.text))
        chunks: list[Chunk] = []
        index = 0
        while index < len(pieces):
            first = index
            end_index = index
            while (
                end_index + 1 < len(pieces)
                and self.counter(document.text[pieces[first][0] : pieces[end_index + 1][1]])
                <= self.max_tokens
            ):
                end_index += 1
            start, end = pieces[first][0], pieces[end_index][1]
            position = len(chunks)
            chunks.append(
                Chunk(
                    f"{document.id}#{position}",
                    document.id,
                    position,
                    document.text[start:end],
                    start,
                    end,
                    document.metadata,
                )
            )
            next_index = end_index + 1
            if self.overlap and next_index < len(pieces):
                next_index = max(first + 1, next_index - self.overlap)
            index = next_index
        return chunks
