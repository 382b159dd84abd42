"""Canonicalization: idempotent, meaning-preserving, code untouched; deterministic JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenlean as tl

_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})")

prose_chars = st.sampled_from([*"ab cd\t  \n\r\n`~é e\u0301 xyz.,:-#*", "```", "\n```\n"])
texts = st.lists(prose_chars, max_size=80).map("".join)


def _words_outside_code(text: str) -> list[str]:
    """Whitespace-separated words, inline code spans and code blocks kept whole."""
    out: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if fence is not None:
            block.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                out.append("\n".join(block))
                fence, block = None, []
            continue
        match = _FENCE_RE.match(line)
        if match:
            fence, block = match.group(1), [line.rstrip()]
            continue
        out.extend(line.split())
    if fence is not None:
        out.append("\n".join(block))
    return out


@settings(max_examples=400)
@given(texts)
def test_canonicalization_is_idempotent(text: str) -> None:
    """Canonicalizing a canonical text changes nothing."""
    once = tl.canonicalize_text(text)
    assert tl.canonicalize_text(once) == once


@settings(max_examples=400)
@given(texts)
def test_canonicalization_keeps_every_word_and_every_code_block(text: str) -> None:
    """Only whitespace changes: the words outside code and the code itself are unchanged."""
    import unicodedata

    normalized = unicodedata.normalize("NFC", text)
    assert _words_outside_code(tl.canonicalize_text(text)) == _words_outside_code(normalized)


def test_whitespace_and_line_endings_are_normalized() -> None:
    """CRLF, trailing spaces, repeated spaces and blank-line runs are normalized."""
    text = "\ufeff\n\nHello   world \t\r\nsecond\tline\r\n\r\n\r\n\r\nthird\n\n"
    assert tl.canonicalize_text(text) == "Hello world\nsecond line\n\nthird"


def test_indentation_is_structure_and_is_kept() -> None:
    """Leading indentation survives (nested lists, YAML)."""
    text = "- item\n    - nested   item\n\tkey: value"
    assert tl.canonicalize_text(text) == "- item\n    - nested item\n\tkey: value"


def test_fenced_code_blocks_are_untouched() -> None:
    """Everything inside a fence is kept byte for byte, trailing spaces included."""
    code = "```python\ndef f(x):   \n    return  x\n\n\n\n```"
    text = f"Look   at this:\n{code}\nThanks"
    assert tl.canonicalize_text(text) == f"Look at this:\n{code}\nThanks"


def test_inline_code_spans_are_untouched() -> None:
    """Spaces inside `inline code` are kept."""
    assert tl.canonicalize_text("run   `a  --b   c`  now") == "run `a  --b   c` now"


def test_unicode_is_nfc_normalized() -> None:
    """Decomposed accents compose, so the two spellings of 'é' canonicalize equally."""
    assert tl.canonicalize_text("cafe\u0301") == tl.canonicalize_text("caf\u00e9") == "caf\u00e9"


def test_options_can_turn_rules_off() -> None:
    """CanonicalizeOptions disables individual rules; unknown options are rejected."""
    options = tl.CanonicalizeOptions(collapse_spaces=False, max_blank_lines=2)
    assert tl.canonicalize_text("a  b\n\n\n\nc", options) == "a  b\n\n\nc"
    with pytest.raises(ValueError, match="extra"):
        tl.CanonicalizeOptions(no_such_option=True)  # type: ignore[call-arg]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_canonical_json_ignores_key_order_and_round_trips(value: dict[str, Any]) -> None:
    """Key insertion order never changes the output, and the output parses back to the value."""
    reversed_value = dict(reversed(list(value.items())))
    encoded = tl.canonical_json(value)
    assert tl.canonical_json(reversed_value) == encoded
    assert json.loads(encoded) == value


def test_canonical_json_is_compact_and_keeps_unicode() -> None:
    """No insignificant whitespace; non-ASCII text stays readable UTF-8."""
    assert tl.canonical_json({"b": (1, 2), "a": "é"}) == '{"a":"é","b":[1,2]}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": float("nan")}, r"\$\.x"),
        ({"x": {1, 2}}, "set"),
        ({1: "a"}, "keys must be strings"),
        ([object()], r"\$\[0\]"),
    ],
)
def test_values_without_a_json_form_raise_not_serializable(value: Any, message: str) -> None:
    """NotSerializableError names the path of the offending value."""
    with pytest.raises(tl.NotSerializableError, match=message):
        tl.canonical_json(value)


def test_fingerprint_is_stable_and_length_prefixed() -> None:
    """The fingerprint is SHA-256 over length-prefixed UTF-8 parts; part boundaries matter."""
    import hashlib

    data = b"policy v1"
    expected = hashlib.sha256(len(data).to_bytes(8, "big") + data).hexdigest()
    assert tl.fingerprint("policy v1") == expected[:32] == "5787b5ff14dc627176e793b98f93557b"
    assert tl.fingerprint("policy v1", length=64) == expected
    assert tl.fingerprint("ab", "c") != tl.fingerprint("a", "bc")


def test_an_indented_fence_inside_a_list_item_is_code() -> None:
    """A fence indented under a list item keeps its code byte for byte."""
    text = "- step one:\n    ```\n    a    b\n    ```\n- step two"
    assert tl.canonicalize_text(text) == text


def test_every_leading_byte_order_mark_goes_in_one_pass() -> None:
    """Several BOMs at the start are all removed, so one pass is enough (idempotence)."""
    assert tl.canonicalize_text("\ufeff\ufeffa") == "a"
