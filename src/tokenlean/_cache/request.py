"""What a completion cache keys on: the canonical request, and the hashed keys built from it."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenlean._canonical import canonical_json, canonicalize_text
from tokenlean._errors import ConfigurationError, MalformedRequestError, NotSerializableError

__all__ = ["CacheRequest", "hash_key", "hash_tenant"]

# Request fields that never change the output; everything else is part of the key.
_NOT_OUTPUT_AFFECTING = frozenset(
    {
        "messages",
        "model",
        "tools",
        "response_format",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "timeout",
        "extra_headers",
        "extra_query",
        "extra_body",
    }
)


def hash_key(secret: bytes, *parts: str) -> str:
    """HMAC-SHA256 of length-prefixed parts under ``secret``, as 32 hex characters."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()[:32]


def hash_tenant(secret: bytes, tenant: str) -> str:
    """The hashed id of a tenant, under which all of its entries are kept.

    Raises:
        ConfigurationError: an empty or non-string tenant.
    """
    if not isinstance(tenant, str) or not tenant:
        raise ConfigurationError("tenant must be a non-empty string")
    return hash_key(secret, "tenant", tenant)


def _plain_text(content: Any) -> str | None:
    """The text of content made only of text; None when it holds anything else (an image…)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and all(
        isinstance(part, Mapping) and part.get("type") in ("text", "input_text") for part in content
    ):
        return "\n".join(str(part.get("text", "")) for part in content)
    return None


def _canonical_message(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = canonicalize_text(out["content"])
    if isinstance(out.get("tool_calls"), list | tuple):
        out["tool_calls"] = [_canonical_call(call) for call in out["tool_calls"]]
    return out


def _canonical_call(call: Any) -> Any:
    """A tool call whose JSON ``arguments`` string is re-serialized by :func:`canonical_json`
    (the same arguments in another key order or spacing are the same call); arguments that
    are not JSON are kept as sent."""
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = canonical_json(json.loads(function["arguments"]))
    except (ValueError, RecursionError, NotSerializableError):
        return call
    return {**call, "function": {**function, "arguments": arguments}}


@dataclass(frozen=True)
class CacheRequest:
    """A model request as the caches see it.

    Attributes:
        model: the model name.
        messages: OpenAI-style chat messages (for a completion prompt, one user message).
        params: every decoding setting that changes the output (temperature, top_p, max
            tokens, stop, n, seed, tool choice…), or an opaque settings string from a framework.
        tools: tool schemas.
        response_format: structured-output format, if any.
        split: ``(fixed, compared)`` chosen by a caller that knows which text varies (a
            framework wrapper keyed on a chain's ``question`` input); it overrides the
            route's splitter for semantic matching, and both parts are in the exact key.

    Example:
        >>> request = CacheRequest.from_openai(
        ...     {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}],
        ...      "temperature": 0, "stream": True}
        ... )
        >>> request.params
        {'temperature': 0}
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] = ()
    response_format: Any = None
    split: tuple[str, str] | None = None

    @classmethod
    def from_openai(cls, body: Mapping[str, Any]) -> CacheRequest:
        """Build from a Chat Completions request body.

        Raises:
            MalformedRequestError: no model, or no list of messages.
        """
        if not isinstance(body, Mapping):
            raise MalformedRequestError("a request body must be an object")
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            raise MalformedRequestError("a cacheable request needs a 'model' string")
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise MalformedRequestError("a cacheable request needs a 'messages' list of objects")
        params = {k: v for k, v in body.items() if k not in _NOT_OUTPUT_AFFECTING}
        return cls(
            model=model,
            messages=tuple(messages),
            params=params,
            tools=tuple(body.get("tools") or ()),
            response_format=body.get("response_format"),
        )

    @classmethod
    def from_prompt(cls, prompt: str, *, model: str, **params: Any) -> CacheRequest:
        """Build from a completion-style prompt string."""
        return cls(model=model, messages=({"role": "user", "content": prompt},), params=params)

    @property
    def temperature(self) -> float | None:
        """The requested sampling temperature, if any."""
        value = self.params.get("temperature")
        return float(value) if isinstance(value, int | float) else None

    def canonical(self) -> str:
        """The canonical JSON of the whole request: what the exact key is taken over."""
        return canonical_json(
            {
                "model": self.model,
                "messages": [_canonical_message(m) for m in self.messages],
                "params": dict(self.params),
                "tools": list(self.tools),
                "response_format": self.response_format,
                **({"split": list(self.split)} if self.split is not None else {}),
            }
        )

    def settings(self) -> str:
        """Canonical JSON of everything but the messages: model, params, tools, format."""
        return canonical_json(
            {
                "model": self.model,
                "params": dict(self.params),
                "tools": list(self.tools),
                "response_format": self.response_format,
            }
        )

    def split_last_user_turn(self, context_messages: int | None) -> tuple[str, str] | None:
        """``(context, query)`` for semantic matching, or None when the request has no place
        for it.

        Semantic matching applies only when the last message is a user turn of plain text (no
        image, file or tool content, no extra fields): the query is that turn's canonical text,
        and the context is the canonical JSON of the system messages and of the turns before it
        (the last ``context_messages`` of those turns, or all of them). Any other request (an
        agent step after a tool result, an image question) is matched exactly or not at all.
        """
        if not self.messages:
            return None
        last = self.messages[-1]
        if last.get("role") != "user" or set(last) - {"role", "content"}:
            return None
        text = _plain_text(last.get("content"))
        if text is None:
            return None
        before = [_canonical_message(m) for m in self.messages[:-1]]
        system = [m for m in before if m.get("role") in ("system", "developer")]
        turns = [m for m in before if m.get("role") not in ("system", "developer")]
        if context_messages is not None:
            turns = turns[len(turns) - context_messages :] if context_messages else []
        return canonical_json({"system": system, "turns": turns}), canonicalize_text(text)
