"""Reading user input safely: size limits, strict UTF-8, JSON and JSON lines from files, chat
requests from JSON, and error messages that do not echo the input.

Every reader here raises a :class:`~tokenlean.InvalidInputError` (or, for a missing file or a
folder, a :class:`~tokenlean.ConfigurationError`) whose message names the file, the line and
what was expected. A wrong value is described by :func:`describe_value` (its kind and size, an
object's field names), never quoted, so a malformed file with a secret in it is not echoed to a
terminal or a log; at most the offending byte of a non-UTF-8 file is shown. :func:`excerpt`
quotes a short, escaped piece of a value the user typed (an argument), never of file content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from tokenlean._errors import (
    ConfigurationError,
    InputDecodeError,
    InputTooLargeError,
    InvalidInputError,
    MalformedRequestError,
)

__all__ = [
    "EXCERPT_CHARS",
    "decode_text",
    "describe_value",
    "excerpt",
    "looks_like_json",
    "parse_chat_request",
    "parse_json",
    "read_json_file",
    "read_json_lines",
    "read_limited",
    "read_text_file",
]

EXCERPT_CHARS = 80
"""The most characters :func:`excerpt` quotes."""


def excerpt(value: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short excerpt of ``value`` for a message (an argument echoed back): its ``repr``
    (control characters and non-UTF-8 bytes escaped), at most ``limit`` characters, ``…``
    marking a cut.

    Example:
        >>> excerpt("line one\\nline two")
        "'line one\\\\nline two'"
        >>> len(excerpt("x" * 10_000))
        80
    """
    text = repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,24}")


def describe_value(value: Any) -> str:
    """What a parsed JSON value is, in a few words, for an error message. No value from the
    input is quoted (a string is described by its length); of an object's keys, only those
    that look like field names (short identifiers) are named.

    Example:
        >>> describe_value(42), describe_value([1, 2]), describe_value("my password")
        ('a number', 'a list of 2 items', 'a string of 11 characters')
        >>> describe_value({"question": "x", "answer": "y", "sk-12345": "z"})
        "an object with keys 'question', 'answer' and 1 other"
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"a string of {len(value)} character{'s' if len(value) != 1 else ''}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, Mapping):
        if not value:
            return "an empty object"
        names = [k for k in value if isinstance(k, str) and _IDENTIFIER.fullmatch(k)][:6]
        others = len(value) - len(names)
        if not names:
            return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
        listed = ", ".join(map(repr, names))
        return f"an object with keys {listed}" + (f" and {others} other" if others else "")
    return type(value).__name__


def read_limited(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read a whole binary stream, refusing more than ``max_bytes``.

    Raises:
        InputTooLargeError: the stream holds more than ``max_bytes``.
    """
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputTooLargeError(
            f"input is larger than the limit of {max_bytes:,} bytes "
            "(raise it with TOKENLEAN_MAX_INPUT_BYTES or --max-bytes)"
        )
    return data


def decode_text(data: bytes) -> str:
    """Decode UTF-8 bytes (a leading byte-order mark is allowed).

    Raises:
        InputDecodeError: the bytes are not valid UTF-8; the message gives the byte offset.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputDecodeError(
            f"input is not valid UTF-8: byte {exc.start} ({data[exc.start : exc.start + 1]!r}) "
            f"{exc.reason}"
        ) from exc


def looks_like_json(text: str) -> bool:
    """True when the text starts like a JSON object or array."""
    return text.lstrip()[:1] in ("{", "[")


def parse_json(text: str, where: str) -> Any:
    """Parse one JSON value; ``where`` (a file, or a file and line) starts any error message.

    Raises:
        InvalidInputError: not valid JSON (position given), nested too deeply for the parser,
            or a number with too many digits.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{where}: not JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidInputError(f"{where}: not JSON (nested too deeply)") from None
    except ValueError:  # an integer of more digits than int() converts
        raise InvalidInputError(f"{where}: not JSON (a number with too many digits)") from None


def parse_chat_request(text: str) -> dict[str, Any]:
    """Parse a chat request: an object with ``messages``, or a bare list of messages.

    Raises:
        MalformedRequestError: the text is not valid JSON (line and column given) or not a
            chat request.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequestError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise MalformedRequestError("JSON nested too deeply") from exc
    except ValueError as exc:
        raise MalformedRequestError("not valid JSON: a number with too many digits") from exc
    if isinstance(value, list):
        value = {"messages": value}
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        raise MalformedRequestError(
            "a chat request is a JSON object with a 'messages' list (or a list of messages)"
        )
    return value


def _existing_file(path: Path) -> Path:
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder, not a file")
    if not path.is_file():
        raise ConfigurationError(f"no such file: {path}")
    return path


def _unreadable(path: Path, exc: OSError) -> InvalidInputError:
    return InvalidInputError(f"cannot read {path}: {exc.strerror or type(exc).__name__}")


def _not_utf8(
    where: str, exc: UnicodeDecodeError, data: bytes, line_start: int
) -> InputDecodeError:
    bad = data[exc.start : exc.start + 1]
    return InputDecodeError(
        f"{where}: not UTF-8 text (byte {exc.start - line_start + 1} of the line, {bad!r}: "
        f"{exc.reason})"
    )


def _decode_line(data: bytes, where: str, first: bool) -> str:
    try:
        return data.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(where, exc, data, 0) from None


def read_text_file(path: str | Path) -> str:
    """The whole text of a UTF-8 file (a leading byte-order mark is allowed).

    Raises:
        ConfigurationError: no such file, or a folder.
        InputDecodeError: not UTF-8; the message gives the line and the byte.
        InvalidInputError: the file cannot be read.
    """
    path = _existing_file(Path(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _not_utf8(f"{path}:{line}", exc, data, data.rfind(b"\n", 0, exc.start) + 1) from None


def read_json_file(path: str | Path) -> Any:
    """The JSON value a UTF-8 file holds.

    Raises:
        ConfigurationError: no such file, or a folder.
        InvalidInputError: not UTF-8 or not JSON (see :func:`read_text_file`, :func:`parse_json`).
    """
    return parse_json(read_text_file(path), str(path))


def read_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON-lines file, read as it goes.

    Raises:
        ConfigurationError: no such file, or a folder.
        InvalidInputError: a line that is not UTF-8 or not JSON; the message gives its number.
    """
    path = _existing_file(Path(path))
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    with handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            text = _decode_line(raw, where, number == 1)
            if text.strip():
                yield number, parse_json(text, where)
