"""Provider prefix-cache hints: Anthropic breakpoints, OpenAI prompt_cache_key, the table."""

from __future__ import annotations

from typing import Any

import pytest

import tokenlean as tl
from tokenlean.testing import HashingEmbedder

LONG_POLICY = "Follow the refund policy exactly and cite the clause you apply. " * 120  # ~1.4k
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look an order up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


def _markers(request: dict[str, Any]) -> list[tuple[str, int]]:
    found = []
    for location in ("tools", "system"):
        for index, block in enumerate(request.get(location, [])):
            if "cache_control" in block:
                found.append((location, index))
    for index, message in enumerate(request["messages"]):
        if any("cache_control" in block for block in message["content"]):
            found.append(("messages", index))
    return found


def test_a_short_prefix_gets_no_breakpoint() -> None:
    """Below the model's minimum cacheable length no cache_control is placed."""
    plan = tl.PromptPlan().with_policy("Be brief.").with_user("hi")
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5")
    assert prompt.breakpoints == ()
    assert _markers(prompt.request) == []
    assert prompt.cacheable is False


def test_a_long_static_prefix_gets_a_breakpoint_at_its_end() -> None:
    """The end of the static prefix carries the breakpoint once it reaches the minimum."""
    plan = tl.PromptPlan().with_tools(TOOLS).with_policy(LONG_POLICY).with_user("hi")
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5")
    assert _markers(prompt.request) == [("system", 0)]
    assert prompt.request["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert prompt.static_prefix_tokens >= 1024
    assert prompt.min_cacheable_tokens == 1024


def test_the_minimum_depends_on_the_model() -> None:
    """The same ~1.4k-token prefix is cacheable on Sonnet 4.5 but not on Haiku 4.5 (4096)."""
    plan = tl.PromptPlan().with_policy(LONG_POLICY).with_user("hi")
    assert tl.anthropic_request(plan, "claude-sonnet-4-5-20250929").cacheable
    assert not tl.anthropic_request(plan, "claude-haiku-4-5").cacheable


def test_breakpoints_never_exceed_four() -> None:
    """Many static blocks still get at most four breakpoints, the last block's first."""
    plan = tl.PromptPlan()
    for index in range(8):
        plan = plan.with_policy(LONG_POLICY + str(index), name=f"block{index}")
    prompt = tl.anthropic_request(plan.with_user("hi"), "claude-opus-4-1")
    assert len(prompt.breakpoints) == 4
    assert ("system", 7) in _markers(prompt.request)
    assert [b.prefix_tokens for b in prompt.breakpoints] == sorted(
        b.prefix_tokens for b in prompt.breakpoints
    )


def test_history_gets_a_breakpoint_when_nothing_volatile_precedes_it() -> None:
    """A long conversation is cached up to its last turn if no retrieved/state block is first."""
    history = [
        {"role": "user", "content": "question " * 10},
        {"role": "assistant", "content": "answer " * 10},
    ]
    plan = tl.PromptPlan().with_policy(LONG_POLICY).with_history(history).with_user("next")
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5")
    assert _markers(prompt.request) == [("system", 0), ("messages", 1)]
    with_facts = plan.with_retrieved("fresh fact")
    assert _markers(tl.anthropic_request(with_facts, "claude-sonnet-4-5").request) == [
        ("system", 0)
    ]


def test_tools_are_converted_and_can_carry_the_breakpoint() -> None:
    """Tools become Anthropic tool definitions; a long tools-only prefix is cached at its end."""
    many_tools = [
        {
            "type": "function",
            "function": {
                "name": f"tool_{i}",
                "description": "Does a documented thing. " * 20,
                "parameters": {"type": "object", "properties": {}},
            },
        }
        for i in range(12)
    ]
    plan = tl.PromptPlan().with_tools(many_tools).with_user("hi")
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5", ttl="1h")
    assert prompt.request["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    assert _markers(prompt.request) == [("tools", 11)]
    assert prompt.request["tools"][11]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


def test_anthropic_rendering_rejects_unconvertible_history() -> None:
    """A role Anthropic has no place for, a malformed tool call or an image part is refused
    with a clear error."""
    bad = [
        ([{"role": "function", "content": "x"}], "Anthropic takes"),
        ([{"role": "tool", "content": "x"}], "needs its id"),
        (
            [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                }
            ],
            "not a JSON object",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "only text parts",
        ),
        ([{"role": "assistant", "content": ""}], "empty assistant turn"),
    ]
    for history, message in bad:
        plan = tl.PromptPlan().with_history(history).with_user("hi")
        with pytest.raises(tl.MalformedRequestError, match=message):
            tl.anthropic_request(plan, "claude-sonnet-4-5")


def test_anthropic_rendering_converts_tool_turns() -> None:
    """OpenAI-shaped tool calls and results become tool_use blocks and one user turn of
    tool_result blocks; text parts are joined; the history breakpoint still applies."""
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "track", "arguments": '{"o": 1}'}},
        {"id": "c2", "type": "function", "function": {"name": "eta", "arguments": "{}"}},
    ]
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Where is "}, {"type": "text",
                                                                           "text": "order 1?"}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "In Lyon."},
        {"role": "tool", "tool_call_id": "c2", "content": "Tomorrow."},
        {"role": "assistant", "content": "In Lyon, there tomorrow."},
    ]  # fmt: skip
    plan = tl.PromptPlan().with_policy("Be brief. " * 800).with_history(history).with_user("ok")
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5")
    messages = prompt.request["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"][0]["text"] == "Where is order 1?"
    assert messages[1]["content"][1:] == [
        {"type": "tool_use", "id": "c1", "name": "track", "input": {"o": 1}},
        {"type": "tool_use", "id": "c2", "name": "eta", "input": {}},
    ]
    assert [b["tool_use_id"] for b in messages[2]["content"]] == ["c1", "c2"]
    assert messages[2]["content"][1]["content"] == "Tomorrow."
    assert ("messages", 3) in _markers(prompt.request)


def test_a_memory_pack_with_tool_turns_renders_for_anthropic() -> None:
    """A ConversationMemory pack of a tool-using conversation goes through
    PromptPlan.from_request to an Anthropic request, its static system prompt marked."""
    memory = tl.ConversationMemory(embedder=HashingEmbedder(32))
    call = {"id": "c1", "type": "function", "function": {"name": "track", "arguments": "{}"}}
    memory.add("s", [
        {"role": "user", "content": "Where is my order?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "In Lyon."},
        {"role": "assistant", "content": "It is in Lyon."},
    ])  # fmt: skip
    pack = memory.context(
        "s", budget=4_000, system="Be brief. " * 800, user="And when will it arrive?"
    )
    plan = tl.PromptPlan.from_request({"messages": pack.messages})
    prompt = tl.anthropic_request(plan, "claude-sonnet-4-5")
    roles = [m["role"] for m in prompt.request["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert prompt.request["system"][0]["text"] == pack.static_prefix.strip()
    assert prompt.request["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_a_non_anthropic_model_is_a_configuration_error() -> None:
    """Asking for Anthropic breakpoints for an OpenAI model is refused."""
    with pytest.raises(tl.ConfigurationError):
        tl.anthropic_request(tl.PromptPlan().with_user("hi"), "gpt-4o")


def test_prompt_cache_key_is_shared_by_a_prefix_and_private_to_a_tenant() -> None:
    """Same static prefix, same key; another tenant or route, another key; nothing readable."""
    plan = tl.PromptPlan().with_policy(LONG_POLICY)
    key = tl.openai_prompt_cache_key(plan.with_user("a"), tenant="acme")
    assert key == tl.openai_prompt_cache_key(plan.with_user("b"), tenant="acme")
    assert key != tl.openai_prompt_cache_key(plan, tenant="globex")
    assert key != tl.openai_prompt_cache_key(plan, tenant="acme", route="billing")
    assert "acme" not in key
    assert key.startswith("tl-")


def test_openai_request_carries_messages_tools_and_the_key() -> None:
    """The body is ready for the Chat Completions API."""
    plan = tl.PromptPlan().with_policy("P").with_tools(TOOLS).with_user("hi")
    body = tl.openai_request(plan, "gpt-4o-mini", tenant="acme", extra={"temperature": 0})
    assert body["model"] == "gpt-4o-mini"
    assert body["tools"] == TOOLS
    assert body["temperature"] == 0
    assert body["prompt_cache_key"] == tl.openai_prompt_cache_key(plan, tenant="acme")


@pytest.mark.parametrize(
    ("model", "provider", "min_tokens", "read"),
    [
        ("claude-opus-4-5-20251101", "anthropic", 4096, 0.1),
        ("claude-sonnet-4-6", "anthropic", 2048, 0.1),
        ("claude-3-7-sonnet-latest", "anthropic", 1024, 0.1),
        ("claude-some-future-model", "anthropic", 1024, 0.1),
        ("gpt-5-mini", "openai", 1024, 0.1),
        ("gpt-4.1-nano", "openai", 1024, 0.25),
        ("gpt-4o", "openai", 1024, 0.5),
    ],
)
def test_provider_table_covers_the_documented_models(
    model: str, provider: str, min_tokens: int, read: float
) -> None:
    """The dated table gives each family's minimum length and cached-read price."""
    rule = tl.prefix_cache_rule(model)
    assert rule is not None
    assert (rule.provider, rule.min_tokens, rule.read_multiplier) == (provider, min_tokens, read)


def test_unknown_providers_have_no_rule() -> None:
    """A model no provider rule covers gets None, not a guess."""
    assert tl.prefix_cache_rule("llama-3.1-8b") is None
    assert tl.PROVIDER_TABLE_AS_OF.year >= 2026
