"""Provider batch-API files: write requests for OpenAI's and Anthropic's batch APIs, read results.

For offline latency classes, requests can go through the providers' batch APIs (half price,
answers within a day) instead of live calls. These functions only write and read the files, so
they work and are tested without network.

- OpenAI: a JSONL file, one ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body"}`` per line; results come back as JSONL with ``custom_id`` and ``response.body`` or
  ``error``.
- Anthropic (Message Batches): a JSON object ``{"requests": [{"custom_id", "params"}]}``;
  results come back as JSONL with ``custom_id`` and ``result`` (``type`` ``succeeded`` with a
  ``message``, or ``errored`` / ``canceled`` / ``expired``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tokenlean._errors import InvalidInputError

__all__ = [
    "read_anthropic_batch_results",
    "read_openai_batch_results",
    "write_anthropic_batch",
    "write_openai_batch",
]


def _check_ids(requests: Mapping[str, Any]) -> None:
    for custom_id in requests:
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 64:
            raise InvalidInputError(f"custom ids must be 1 to 64 characters, got {custom_id!r}")


def _rows(path: str | Path, provider: str, *keys: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a results file, each checked for ``keys``."""
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in keys:
                row[key]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{number}: not an {provider} batch result") from exc
        yield row


def write_openai_batch(requests: Mapping[str, Mapping[str, Any]], path: str | Path,
                       *, url: str = "/v1/chat/completions") -> Path:  # fmt: skip
    """Write ``{custom_id: request body}`` as an OpenAI batch input file."""
    _check_ids(requests)
    target = Path(path)
    lines = [json.dumps({"custom_id": cid, "method": "POST", "url": url, "body": dict(body)})
             for cid, body in requests.items()]  # fmt: skip
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def read_openai_batch_results(path: str | Path) -> dict[str, Any]:
    """``{custom_id: response body}``; a failed request maps to an ``InvalidInputError``
    instance carrying the provider's error, so one failure never hides the others.

    Raises:
        InvalidInputError: a line that is not a batch result.
    """
    results: dict[str, Any] = {}
    for row in _rows(path, "OpenAI", "custom_id"):
        custom_id = row["custom_id"]
        response = row.get("response") or {}
        if row.get("error") or response.get("status_code", 200) >= 400:
            results[custom_id] = InvalidInputError(f"{custom_id}: {row.get('error') or response}")
        else:
            results[custom_id] = response.get("body")
    return results


def write_anthropic_batch(requests: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``{custom_id: Messages API params}`` as an Anthropic Message Batches request."""
    _check_ids(requests)
    target = Path(path)
    payload = {"requests": [{"custom_id": cid, "params": dict(p)} for cid, p in requests.items()]}
    target.write_text(json.dumps(payload), encoding="utf-8")
    return target


def read_anthropic_batch_results(path: str | Path) -> dict[str, Any]:
    """``{custom_id: message}``; errored, canceled or expired requests map to an error
    instance.

    Raises:
        InvalidInputError: a line that is not a batch result.
    """
    results: dict[str, Any] = {}
    for row in _rows(path, "Anthropic", "custom_id", "result"):
        custom_id, result = row["custom_id"], row["result"]
        if not isinstance(result, dict):
            raise InvalidInputError(f"{path}: {custom_id}: result must be an object")
        if result.get("type") == "succeeded":
            results[custom_id] = result.get("message")
        else:
            results[custom_id] = InvalidInputError(f"{custom_id}: {result.get('type')} {result}")
    return results
