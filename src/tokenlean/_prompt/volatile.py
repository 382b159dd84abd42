"""Volatile values: timestamps, UUIDs, request ids and anything else that changes per request.

A single timestamp in a system prompt makes every request's prefix unique, so no provider prefix
cache and no completion cache can ever hit. Detectors find such values; :func:`mask_volatile`
replaces them with numbered placeholders and reports every value it replaced, so nothing is lost
silently: the values can be moved to the volatile end of the prompt, or left out of a cache key.

Detectors are plain objects with a ``name`` and a ``find(text)`` method yielding ``(start, end)``
spans; :class:`RegexDetector` covers most needs::

    >>> order = RegexDetector("order_id", r"\\bORD-\\d{6,}\\b")
    >>> mask_volatile("Order ORD-123456 shipped", detectors=[order]).text
    'Order [order_id#1] shipped'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tokenlean._errors import ConfigurationError

__all__ = [
    "DEFAULT_DETECTORS",
    "MaskResult",
    "MaskedValue",
    "RegexDetector",
    "VolatileDetector",
    "VolatileMasker",
    "mask_volatile",
]


@runtime_checkable
class VolatileDetector(Protocol):
    """Finds volatile values in a text."""

    name: str

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        """Yield the ``(start, end)`` character spans of the values found."""
        ...


class RegexDetector:
    """A detector defined by a regular expression (a pattern string or a compiled pattern).

    Raises:
        ConfigurationError: the name is empty or the pattern does not compile.

    Example:
        >>> detector = RegexDetector("order_id", r"\\bORD-\\d{6,}\\b")
        >>> text = "Orders ORD-123456 and ORD-654321 shipped"
        >>> [text[start:end] for start, end in detector.find(text)]
        ['ORD-123456', 'ORD-654321']
        >>> mask_volatile(text, detectors=[detector]).text
        'Orders [order_id#1] and [order_id#2] shipped'
    """

    def __init__(self, name: str, pattern: str | re.Pattern[str], flags: int = 0) -> None:
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigurationError(f"detector name must be a simple word, got {name!r}")
        try:
            self.pattern = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        except re.error as exc:
            raise ConfigurationError(f"detector {name!r}: invalid pattern: {exc}") from exc
        self.name = name

    def find(self, text: str) -> Iterator[tuple[int, int]]:
        for match in self.pattern.finditer(text):
            if match.end() > match.start():
                yield match.span()

    def __repr__(self) -> str:
        return f"RegexDetector({self.name!r}, {self.pattern.pattern!r})"


_ISO_TIMESTAMP = (
    r"\b\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"  # date
    r"[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,9})?)?"  # time
    r"(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?(?![\d:])"  # zone
)
_RFC_DATE = (
    r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}(?::\d{2})? (?:GMT|UTC|[+-]\d{4})"
)
_UUID = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
# Prefixed ids as providers and tracing systems print them (req_…, chatcmpl-…, run-…, trace ids).
_REQUEST_ID = (
    r"\b(?:req|request|chatcmpl|msg|run|trace|span|call|toolu|resp)[_-]"
    r"(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{8,}\b"
)
# The value after a "request id:" / "X-Request-ID=" label, whatever its shape.
_REQUEST_ID_FIELD = r"(?i)(?:(?<=request[_ -]id[:=])|(?<=request[_ -]id[:=] ))[A-Za-z0-9_-]{6,}"

#: The detectors used when none are given: timestamps (ISO 8601 / RFC 3339 with a time of day,
#: RFC 2822 dates), UUIDs and request ids. Bare dates are not volatile by default: "effective
#: 2024-05-01" in a policy is content.
DEFAULT_DETECTORS: tuple[RegexDetector, ...] = (
    RegexDetector("timestamp", _ISO_TIMESTAMP),
    RegexDetector("timestamp", _RFC_DATE),
    RegexDetector("uuid", _UUID),
    RegexDetector("request_id", _REQUEST_ID),
    RegexDetector("request_id", _REQUEST_ID_FIELD),
)


@dataclass(frozen=True)
class MaskedValue:
    """One value :func:`mask_volatile` replaced: what it was, where, and its placeholder."""

    kind: str
    value: str
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True)
class MaskResult:
    """A text with its volatile values replaced, and the report of every replacement."""

    text: str
    masked: tuple[MaskedValue, ...]

    def restore(self) -> str:
        """The original text: every placeholder put back to its value."""
        pieces: list[str] = []
        cursor = 0  # position in the masked text
        shift = 0  # masked position minus original position, up to the current item
        for item in self.masked:
            at = item.start + shift
            pieces.append(self.text[cursor:at])
            pieces.append(item.value)
            cursor = at + len(item.placeholder)
            shift += len(item.placeholder) - (item.end - item.start)
        pieces.append(self.text[cursor:])
        return "".join(pieces)


class VolatileMasker:
    """Masks volatile values across several texts with one numbering.

    Use one masker for all the blocks of one prompt, so that ``[timestamp#1]`` means the same
    value everywhere in it.

    Example:
        >>> masker = VolatileMasker()
        >>> system = masker.mask("Generated at 2026-11-27T17:45:00Z for request req_8f3a9c2d71.")
        >>> system.text
        'Generated at [timestamp#1] for request [request_id#1].'
        >>> state = masker.mask("Last sync: 2026-11-27T17:45:00Z; next: 2026-11-27T18:45:00Z")
        >>> state.text  # the same value keeps its number across blocks
        'Last sync: [timestamp#1]; next: [timestamp#2]'
        >>> [(m.placeholder, m.value) for m in state.masked]
        [('[timestamp#1]', '2026-11-27T17:45:00Z'), ('[timestamp#2]', '2026-11-27T18:45:00Z')]
        >>> state.restore()
        'Last sync: 2026-11-27T17:45:00Z; next: 2026-11-27T18:45:00Z'
    """

    def __init__(self, detectors: Sequence[VolatileDetector] | None = None) -> None:
        self.detectors: tuple[VolatileDetector, ...] = tuple(
            DEFAULT_DETECTORS if detectors is None else detectors
        )
        self._numbers: dict[tuple[str, str], str] = {}
        self._per_kind: dict[str, int] = {}

    def mask(self, text: str) -> MaskResult:
        """Replace the volatile values of ``text`` with placeholders, reporting each one."""
        found: list[tuple[int, int, str]] = []
        for detector in self.detectors:
            found.extend((start, end, detector.name) for start, end in detector.find(text))
        found.sort(key=lambda span: (span[0], -(span[1] - span[0])))
        pieces: list[str] = []
        masked: list[MaskedValue] = []
        cursor = 0
        for start, end, kind in found:
            if start < cursor:
                continue  # overlaps a span already taken
            value = text[start:end]
            placeholder = self._numbers.get((kind, value))
            if placeholder is None:
                self._per_kind[kind] = self._per_kind.get(kind, 0) + 1
                placeholder = f"[{kind}#{self._per_kind[kind]}]"
                self._numbers[(kind, value)] = placeholder
            pieces.append(text[cursor:start])
            pieces.append(placeholder)
            masked.append(MaskedValue(kind, value, start, end, placeholder))
            cursor = end
        pieces.append(text[cursor:])
        return MaskResult("".join(pieces), tuple(masked))


def mask_volatile(text: str, *, detectors: Sequence[VolatileDetector] | None = None) -> MaskResult:
    """Replace volatile values with placeholders ``[kind#n]``, reporting each one.

    Spans found by several detectors are resolved left to right, longest first. The same value
    appearing twice gets the same placeholder, so the masked text still says it is the same.

    Example:
        >>> text = "Now: 2026-11-27T17:45:00Z, trace 123e4567-e89b-12d3-a456-426614174000"
        >>> result = mask_volatile(text)
        >>> result.text
        'Now: [timestamp#1], trace [uuid#1]'
        >>> [m.value for m in result.masked]
        ['2026-11-27T17:45:00Z', '123e4567-e89b-12d3-a456-426614174000']
    """
    return VolatileMasker(detectors).mask(text)
