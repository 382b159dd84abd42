"""Counting the tokens of OpenAI-style chat requests: messages, names and tool schemas.

The per-message overheads follow OpenAI's published method ("How to count tokens with tiktoken"
in the OpenAI cookbook): every message costs 3 tokens beyond its values, a ``name`` one more, and
every reply is primed with 3 tokens. Tool schemas follow the cookbook's ``num_tokens_for_tools``.
Those are the documented figures for the gpt-3.5/gpt-4/gpt-4o families; for anything they do not
cover (image parts, tool calls, nested parameter schemas, other providers) the count is an
estimate and the result says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenlean._canonical import canonical_json
from tokenlean._errors import MalformedRequestError
from tokenlean._tokens.counting import describe_counter, get_token_counter
from tokenlean._tokens.encodings import resolve_encoding

__all__ = [
    "ROLE_ALIASES",
    "RequestTokenCount",
    "count_message_tokens",
    "count_request_tokens",
    "count_tool_tokens",
    "normalize_role",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3

# OpenAI cookbook, num_tokens_for_tools: constants for o200k models (gpt-4o family) and for
# cl100k models (gpt-3.5-turbo, gpt-4).
_TOOL_CONSTANTS = {
    "o200k_base": {"func_init": 7, "prop_init": 3, "prop_key": 3, "enum_init": -3, "enum_item": 3},
    "cl100k_base": {
        "func_init": 10,
        "prop_init": 3,
        "prop_key": 3,
        "enum_init": -3,
        "enum_item": 3,
    },
}
FUNC_END = 12
# Image parts: OpenAI bills 85 tokens for a low-detail image, and 85 + 170 per 512px tile at
# high detail; without the image's size we assume one 1024x1024 image (4 tiles).
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_DEFAULT = 85 + 170 * 4


ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "chat": "user",
    "ai": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "function": "tool",
}
"""Framework and provider role names that are one of the OpenAI roles under another name
(LangChain message types, LlamaIndex roles, Gemini's ``model``); a legacy ``function`` message
is a tool result."""


def normalize_role(role: str) -> str:
    """The OpenAI role of a framework's or provider's role name (``system``, ``developer``,
    ``user``, ``assistant`` and ``tool`` are kept; unknown names are kept as they are).

    Example:
        >>> [normalize_role(r) for r in ("human", "ai", "function", "chatbot", "developer")]
        ['user', 'assistant', 'tool', 'assistant', 'developer']
    """
    return ROLE_ALIASES.get(role, role)


@dataclass(frozen=True)
class RequestTokenCount:
    """Token count of a chat request, with its parts.

    Attributes:
        total: messages + tools + reply priming.
        per_message: tokens of each message, overhead included, in request order.
        tools: tokens of the tool schemas (0 without tools).
        reply_priming: the tokens every reply is primed with.
        counter: name of the token counter used.
        is_approximate: True when any part is an estimate (the counter, or content the published
            method does not cover); ``notes`` says which.
    """

    total: int
    per_message: tuple[int, ...]
    tools: int
    reply_priming: int
    counter: str
    is_approximate: bool
    notes: tuple[str, ...] = ()


def _content_tokens(content: Any, count: Callable[[str], int], notes: list[str]) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count(content)
    if isinstance(content, Sequence):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += count(part)
            elif isinstance(part, Mapping):
                kind = part.get("type")
                if kind in ("text", "input_text", "output_text") and isinstance(
                    part.get("text"), str
                ):
                    total += count(part["text"])
                elif kind in ("image_url", "input_image", "image"):
                    detail = part.get("detail")
                    image = part.get("image_url")
                    if isinstance(image, Mapping):
                        detail = image.get("detail", detail)
                    total += IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_DEFAULT
                    notes.append("image parts are estimated without their size")
                else:
                    total += count(canonical_json(part))
                    notes.append(f"content part of type {kind!r} estimated from its JSON")
            else:
                raise MalformedRequestError(
                    f"a content part must be a string or an object, not {type(part).__name__}"
                )
        return total
    raise MalformedRequestError(
        f"message content must be a string, a list of parts or null, not {type(content).__name__}"
    )


def _message_tokens(message: Any, index: int, count: Callable[[str], int], notes: list[str]) -> int:
    if not isinstance(message, Mapping):
        raise MalformedRequestError(
            f"message {index} must be an object, not {type(message).__name__}"
        )
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise MalformedRequestError(f"message {index} has no 'role' string")
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if value is None:
            continue
        if key == "content":
            total += _content_tokens(value, count, notes)
        elif key == "tool_calls":
            if not isinstance(value, Sequence) or isinstance(value, str):
                raise MalformedRequestError(f"message {index}: 'tool_calls' must be a list")
            for call in value:
                function = call.get("function", {}) if isinstance(call, Mapping) else {}
                total += TOKENS_PER_MESSAGE
                total += count(str(function.get("name", "")))
                total += count(str(function.get("arguments", "")))
            notes.append("tool calls are estimated (OpenAI does not publish their overhead)")
        elif isinstance(value, str):
            total += count(value)
            if key == "name":
                total += TOKENS_PER_NAME
        else:
            total += count(canonical_json(value))
            notes.append(f"message field {key!r} estimated from its JSON")
    return total


def _tool_tokens(
    tools: Sequence[Any], encoding: str, count: Callable[[str], int], notes: list[str]
) -> int:
    if not tools:
        return 0
    constants = _TOOL_CONSTANTS.get(encoding)
    if constants is None:
        constants = _TOOL_CONSTANTS["o200k_base"]
        notes.append(f"tool overhead for encoding {encoding!r} is not published; gpt-4o's used")
    total = 0
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise MalformedRequestError(f"tool {index} must be an object")
        function = tool.get("function", tool)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise MalformedRequestError(f"tool {index} has no function name")
        total += constants["func_init"]
        description = str(function.get("description") or "").removesuffix(".")
        total += count(f"{function['name']}:{description}")
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not isinstance(properties, Mapping) or not properties:
            continue
        total += constants["prop_init"]
        for key, spec in properties.items():
            total += constants["prop_key"]
            spec = spec if isinstance(spec, Mapping) else {}
            enum = spec.get("enum")
            if isinstance(enum, Sequence) and not isinstance(enum, str):
                total += constants["enum_init"]
                for item in enum:
                    total += constants["enum_item"] + count(str(item))
            p_type = spec.get("type", "")
            if not isinstance(p_type, str):
                p_type = canonical_json(p_type)
            p_desc = str(spec.get("description") or "").removesuffix(".")
            total += count(f"{key}:{p_type}:{p_desc}")
            nested = {k: v for k, v in spec.items() if k in ("properties", "items", "anyOf")}
            if nested:
                total += count(canonical_json(nested))
                notes.append("nested parameter schemas are estimated")
    return total + FUNC_END


def count_tool_tokens(
    tools: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    counter: Callable[[str], int] | None = None,
) -> int:
    """Tokens the tool schemas add to a request (OpenAI's ``tools`` list format).

    Raises:
        MalformedRequestError: a tool is not an object with a function name.
    """
    count = counter or get_token_counter(model)
    return _tool_tokens(tools, resolve_encoding(model).encoding, count, [])


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    model: str | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    counter: Callable[[str], int] | None = None,
) -> RequestTokenCount:
    """Count the prompt tokens of a chat request as the provider bills them.

    Args:
        messages: OpenAI-style messages (``role``, ``content`` as text or parts, optional
            ``name``, ``tool_calls``, ``tool_call_id``).
        model: picks the encoding and the overhead constants; ``None`` uses ``cl100k_base``.
        tools: OpenAI-style tool schemas.
        counter: a token counter to use instead of the model's default.

    Raises:
        MalformedRequestError: ``messages`` is not a list of objects with a ``role``.

    Example:
        >>> result = count_message_tokens([{"role": "user", "content": "Hi!"}], model="gpt-4")
        >>> result.total
        9
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise MalformedRequestError("'messages' must be a list of message objects")
    count = counter or get_token_counter(model)
    choice = resolve_encoding(model)
    notes: list[str] = []
    per_message = tuple(_message_tokens(m, i, count, notes) for i, m in enumerate(messages))
    tool_tokens = _tool_tokens(tools or (), choice.encoding, count, notes)
    name, approximate = describe_counter(count)
    if not choice.exact and counter is None:
        notes.append(choice.reason)
    return RequestTokenCount(
        total=sum(per_message) + tool_tokens + REPLY_PRIMING,
        per_message=per_message,
        tools=tool_tokens,
        reply_priming=REPLY_PRIMING,
        counter=name,
        is_approximate=approximate or bool(notes),
        notes=tuple(dict.fromkeys(notes)),
    )


def count_request_tokens(
    request: Mapping[str, Any], *, counter: Callable[[str], int] | None = None
) -> RequestTokenCount:
    """Count a whole chat-completions request body (``model``, ``messages``, ``tools``).

    Raises:
        MalformedRequestError: the request has no ``messages`` list or malformed parts.
    """
    if not isinstance(request, Mapping):
        raise MalformedRequestError("a chat request must be a JSON object")
    if "messages" not in request:
        raise MalformedRequestError("a chat request needs a 'messages' list")
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise MalformedRequestError("'model' must be a string")
    tools = request.get("tools")
    if tools is not None and (isinstance(tools, str) or not isinstance(tools, Sequence)):
        raise MalformedRequestError("'tools' must be a list")
    return count_message_tokens(request["messages"], model=model, tools=tools, counter=counter)
