"""Canonical forms of prompt text and structured data, and the fingerprints taken over them.

Two prompts that mean the same must give the same bytes, so that provider prefix caches hit and
tokenlean's own cache keys are stable. Canonicalization therefore only touches what carries no
meaning for a model, and never anything inside code:

- Unicode NFC, a leading byte-order mark removed, line endings unified to ``\\n``;
- outside code: trailing whitespace removed, runs of spaces and tabs inside a line collapsed to
  one space (indentation is kept: it is structure in Markdown and YAML), runs of blank lines
  reduced to ``max_blank_lines``, blank lines at the start and end removed;
- fenced code blocks (```` ``` ```` or ``~~~``) and inline code spans are kept byte for byte.

The transformation is idempotent: ``canonicalize_text(canonicalize_text(t)) ==
canonicalize_text(t)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from tokenlean._config import FrozenModel
from tokenlean._errors import NotSerializableError

__all__ = ["CanonicalizeOptions", "canonical_json", "canonicalize_text", "fingerprint"]


class CanonicalizeOptions(FrozenModel):
    """What :func:`canonicalize_text` normalizes. The defaults are safe for prompts."""

    collapse_spaces: bool = Field(
        default=True, description="Collapse runs of spaces/tabs inside a line (not indentation)."
    )
    strip_trailing: bool = Field(default=True, description="Remove whitespace at line ends.")
    max_blank_lines: int = Field(default=1, ge=0, description="Longest run of blank lines kept.")
    preserve_code: bool = Field(
        default=True, description="Keep fenced code blocks and inline code spans unchanged."
    )


_DEFAULT_OPTIONS = CanonicalizeOptions()
# Any indentation: a fence inside a list item is indented; treating it as code keeps it intact.
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_SPACES = re.compile(r"[ \t\f\v]{2,}|[\t\f\v]")


def _collapse(segment: str) -> str:
    return _SPACES.sub(" ", segment)


def _normalize_prose_line(line: str, options: CanonicalizeOptions) -> str:
    if options.strip_trailing:
        line = line.rstrip()
    if not options.collapse_spaces:
        return line
    body = line.lstrip(" \t")
    indent = line[: len(line) - len(body)]
    if not options.preserve_code or "`" not in body:
        return indent + _collapse(body)
    parts: list[str] = []
    last = 0
    for match in _INLINE_CODE.finditer(body):
        parts.append(_collapse(body[last : match.start()]))
        parts.append(match.group())
        last = match.end()
    parts.append(_collapse(body[last:]))
    return indent + "".join(parts)


def canonicalize_text(text: str, options: CanonicalizeOptions | None = None) -> str:
    """Return the canonical form of a prompt text (see the module documentation).

    Example:
        >>> canonicalize_text("Hello   world  \\r\\n\\r\\n\\r\\n```\\ncode   here\\n```")
        'Hello world\\n\\n```\\ncode   here\\n```'
    """
    opts = options or _DEFAULT_OPTIONS
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    fence: str | None = None  # the opening fence while inside a code block
    blank_run = 0
    for line in lines:
        if fence is not None:
            out.append(line)
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]}:
                fence = None
            continue
        opening = _FENCE.match(line) if opts.preserve_code else None
        if opening:
            fence = opening.group(1)
            out.append(line.rstrip() if opts.strip_trailing else line)
            blank_run = 0
            continue
        normalized = _normalize_prose_line(line, opts)
        if not normalized.strip():
            blank_run += 1
            if blank_run > opts.max_blank_lines:
                continue
            normalized = ""
        else:
            blank_run = 0
        out.append(normalized)
    # Blank lines at the ends carry no meaning; an unclosed code block is kept as it is.
    while out and fence is None and not out[-1].strip():
        out.pop()
    while out and not out[0].strip():
        out.pop(0)
    return "\n".join(out)


def _check_json(value: Any, path: str) -> Any:
    """Validate ``value`` for deterministic JSON, converting tuples to lists."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotSerializableError(f"{path}: {value!r} has no JSON form")
        return value
    if isinstance(value, Mapping):
        checked: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotSerializableError(
                    f"{path}: object keys must be strings, got {type(key).__name__} {key!r}"
                )
            checked[key] = _check_json(item, f"{path}.{key}")
        return checked
    if isinstance(value, list | tuple):
        return [_check_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise NotSerializableError(
        f"{path}: a {type(value).__name__} has no deterministic JSON form "
        "(use dicts, lists, strings, numbers, booleans and None)"
    )


def canonical_json(value: Any, *, sort_keys: bool = True) -> str:
    """Serialize structured data deterministically: sorted keys, no insignificant whitespace.

    Strings are kept as they are (UTF-8, not ``\\u`` escapes); tuples serialize as lists.

    Raises:
        NotSerializableError: the value holds something with no deterministic JSON form (a set,
            NaN or infinity, a non-string key, an arbitrary object).

    Example:
        >>> canonical_json({"b": 1, "a": [1, 2.5, None]})
        '{"a":[1,2.5,null],"b":1}'
    """
    checked = _check_json(value, "$")
    return json.dumps(checked, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def fingerprint(*parts: str, length: int = 32) -> str:
    """A stable hex fingerprint (SHA-256) of text parts; the same in every process and run.

    Parts are length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` differ.

    Example:
        >>> fingerprint("policy v1")[:12]
        '5787b5ff14dc'
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:length]
