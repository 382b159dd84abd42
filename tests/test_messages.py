"""Chat request counting, checked against the counts OpenAI's cookbook publishes."""

from __future__ import annotations

from typing import Any

import pytest

import tokenlean as tl

# OpenAI cookbook, "How to count tokens with tiktoken": the API bills these 129 prompt tokens
# on gpt-3.5-turbo and gpt-4 (124 on gpt-4o, whose o200k_base encoding is not bundled).
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

# Same cookbook, num_tokens_for_tools: 105 prompt tokens on gpt-3.5-turbo and gpt-4.
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize("model", ["gpt-4", "gpt-3.5-turbo"])
def test_messages_match_openais_published_count(model: str) -> None:
    """The cookbook's example conversation counts 129 tokens, as the API bills it."""
    result = tl.count_message_tokens(COOKBOOK_MESSAGES, model=model)
    assert result.total == 129
    assert result.is_approximate is False
    assert len(result.per_message) == 6
    assert result.reply_priming == 3


@pytest.mark.parametrize("model", ["gpt-4", "gpt-3.5-turbo"])
def test_tools_match_openais_published_count(model: str) -> None:
    """The cookbook's weather tool with its two messages counts 105 tokens."""
    result = tl.count_message_tokens(COOKBOOK_TOOL_MESSAGES, model=model, tools=COOKBOOK_TOOLS)
    assert result.total == 105
    assert result.tools == tl.count_tool_tokens(COOKBOOK_TOOLS, model=model)


def test_a_name_costs_one_token_more() -> None:
    """A message's name adds its tokens plus one."""
    plain = tl.count_message_tokens([{"role": "user", "content": "hi"}], model="gpt-4")
    named = tl.count_message_tokens(
        [{"role": "user", "content": "hi", "name": "bob"}], model="gpt-4"
    )
    assert named.total - plain.total == 1 + tl.count_tokens("bob", model="gpt-4")


def test_content_parts_count_like_the_same_text() -> None:
    """Text parts count as their text; the request is not approximate."""
    as_text = tl.count_message_tokens([{"role": "user", "content": "hello there"}], model="gpt-4")
    as_parts = tl.count_message_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}], model="gpt-4"
    )
    assert as_parts.total == as_text.total
    assert as_parts.is_approximate is False


def test_images_and_tool_calls_are_estimates_and_say_so() -> None:
    """Parts the published method does not cover mark the count approximate, with a note."""
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:...", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    result = tl.count_message_tokens(messages, model="gpt-4")
    assert result.is_approximate is True
    assert any("image" in note for note in result.notes)
    assert any("tool calls" in note for note in result.notes)
    assert result.per_message[0] >= 85


def test_non_openai_models_are_labelled_approximate() -> None:
    """Counting for a Claude model says the tokenizer is an approximation."""
    result = tl.count_message_tokens(COOKBOOK_MESSAGES, model="claude-sonnet-4-5")
    assert result.is_approximate is True
    assert any("not an OpenAI model" in note for note in result.notes)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hello", "must be a list"),
        ([42], "message 0 must be an object"),
        ([{"content": "x"}], "no 'role'"),
        ([{"role": "user", "content": 5}], "content must be"),
        ([{"role": "user", "content": [5]}], "content part"),
        ([{"role": "assistant", "tool_calls": "x"}], "tool_calls"),
    ],
)
def test_malformed_messages_raise_a_clear_error(messages: Any, message: str) -> None:
    """Each malformed shape gets MalformedRequestError saying what is wrong."""
    with pytest.raises(tl.MalformedRequestError, match=message):
        tl.count_message_tokens(messages, model="gpt-4")


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([], "JSON object"),
        ({}, "'messages'"),
        ({"messages": [], "model": 3}, "'model'"),
        ({"messages": [], "tools": "x"}, "'tools'"),
        ({"messages": [], "tools": [{"function": {}}]}, "function name"),
    ],
)
def test_malformed_requests_raise_a_clear_error(request_body: Any, message: str) -> None:
    """count_request_tokens validates the request body's shape."""
    with pytest.raises(tl.MalformedRequestError, match=message):
        tl.count_request_tokens(request_body)


def test_request_counting_uses_the_requests_model() -> None:
    """A request body is counted with its own model and tools."""
    body = {"model": "gpt-4", "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert tl.count_request_tokens(body).total == 105
