"""Volatile values: detected, masked with numbered placeholders, reported, restorable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tokenlean as tl


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("at 2026-11-27T17:45:00Z ok", "timestamp", "2026-11-27T17:45:00Z"),
        ("at 2026-11-27T17:45:00.123456+01:00 ok", "timestamp", "2026-11-27T17:45:00.123456+01:00"),
        ("at 2026-11-27 17:45 ok", "timestamp", "2026-11-27 17:45"),
        ("Date: Tue, 15 Nov 1994 08:12:31 GMT", "timestamp", "Tue, 15 Nov 1994 08:12:31 GMT"),
        (
            "id 123e4567-e89b-12d3-a456-426614174000.",
            "uuid",
            "123e4567-e89b-12d3-a456-426614174000",
        ),
        ("see req_8f3a2b1c9d0e", "request_id", "req_8f3a2b1c9d0e"),
        ("chatcmpl-AbC123xYz789 done", "request_id", "chatcmpl-AbC123xYz789"),
        ("X-Request-ID: a1b2c3d4e5", "request_id", "a1b2c3d4e5"),
    ],
)
def test_default_detectors_find_volatile_values(text: str, kind: str, value: str) -> None:
    """Timestamps, UUIDs and request ids are found and reported with their kind."""
    result = tl.mask_volatile(text)
    assert [(m.kind, m.value) for m in result.masked] == [(kind, value)]
    assert value not in result.text
    assert f"[{kind}#1]" in result.text


@pytest.mark.parametrize(
    "text",
    [
        "Refunds within 30 days of 2024-05-01.",  # a bare date is content
        "Call 555-0100 or order 12345678.",
        "request the refund now",  # 'request' without an id
        "the required_field is missing",
    ],
)
def test_content_that_is_not_volatile_is_left_alone(text: str) -> None:
    """Bare dates, phone numbers and ordinary words are not masked."""
    result = tl.mask_volatile(text)
    assert result.masked == ()
    assert result.text == text


def test_the_same_value_gets_the_same_placeholder() -> None:
    """Repeated values share a placeholder; different values are numbered apart."""
    text = "a 2026-01-01T00:00:00Z b 2026-01-02T00:00:00Z c 2026-01-01T00:00:00Z"
    result = tl.mask_volatile(text)
    assert result.text == "a [timestamp#1] b [timestamp#2] c [timestamp#1]"
    assert len(result.masked) == 3


def test_one_masker_numbers_across_texts() -> None:
    """A VolatileMasker keeps one numbering over several blocks of a prompt."""
    masker = tl.VolatileMasker()
    first = masker.mask("now 2026-01-01T00:00:00Z")
    second = masker.mask("later 2026-01-02T00:00:00Z, started 2026-01-01T00:00:00Z")
    assert first.text == "now [timestamp#1]"
    assert second.text == "later [timestamp#2], started [timestamp#1]"


def test_custom_detectors_extend_the_defaults() -> None:
    """A RegexDetector masks a user-defined pattern."""
    order = tl.RegexDetector("order_id", r"\bORD-\d{6,}\b")
    result = tl.mask_volatile(
        "Order ORD-123456 at 2026-01-01T00:00:00Z",
        detectors=[*tl.DEFAULT_DETECTORS, order],
    )
    assert result.text == "Order [order_id#1] at [timestamp#1]"


@pytest.mark.parametrize(("name", "pattern"), [("", "x"), ("bad name", "x"), ("ok", "(")])
def test_invalid_detectors_are_configuration_errors(name: str, pattern: str) -> None:
    """An empty or spaced name, or a pattern that does not compile, is rejected."""
    with pytest.raises(tl.ConfigurationError):
        tl.RegexDetector(name, pattern)


def test_overlapping_matches_take_the_longest_leftmost() -> None:
    """Where detectors overlap, the earliest and then longest span wins; nothing is lost."""
    short = tl.RegexDetector("short", r"abc")
    long = tl.RegexDetector("long", r"abcdef")
    result = tl.mask_volatile("xx abcdef yy", detectors=[short, long])
    assert result.text == "xx [long#1] yy"
    assert result.restore() == "xx abcdef yy"


pieces = st.sampled_from(
    [
        "text ",
        "2026-11-27T17:45:00Z",
        "123e4567-e89b-12d3-a456-426614174000",
        "req_8f3a2b1c9d0e",
        "[timestamp#1]",
        " request id: abcdef12",
        "\n",
    ]
)


@given(st.lists(pieces, max_size=12).map("".join))
def test_restore_gives_back_the_original_text(text: str) -> None:
    """Masking never loses content: restore() rebuilds the exact original."""
    result = tl.mask_volatile(text)
    assert result.restore() == text
    for item in result.masked:
        assert text[item.start : item.end] == item.value
