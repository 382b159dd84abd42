"""Reading user input safely: size limits, strict UTF-8, and chat requests from JSON."""

from __future__ import annotations

import json
from typing import Any, BinaryIO

from tokenlean._errors import InputDecodeError, InputTooLargeError, MalformedRequestError

__all__ = ["decode_text", "looks_like_json", "parse_chat_request", "read_limited"]


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
    if isinstance(value, list):
        value = {"messages": value}
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        raise MalformedRequestError(
            "a chat request is a JSON object with a 'messages' list (or a list of messages)"
        )
    return value
