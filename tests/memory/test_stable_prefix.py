"""The static prefix: the system prompt in a block of its own, first and byte-identical."""

from __future__ import annotations

from tokenlean import ConversationMemory, PromptPlan, anthropic_request, count_message_tokens
from tokenlean.bench._memory_prefix import prefix_share
from tokenlean.testing import HashingEmbedder

SYSTEM = "You are the support agent of Northwind. " * 3


def _replay(memory: ConversationMemory, turns: int, budget: int) -> list[list[dict[str, object]]]:
    calls = []
    for i in range(turns):
        memory.add("s", [{"role": "user", "content": f"Order {1000 + i} went to city {i}."}])
        pack = memory.context("s", budget=budget, system=SYSTEM, user=f"Where is {1000 + i}?")
        assert pack.tokens == count_message_tokens(pack.messages, counter=memory.counter).total
        assert pack.tokens <= budget
        calls.append(pack.messages)
        memory.add("s", [{"role": "assistant", "content": f"Order {1000 + i} is in city {i}."}])
    return calls


def test_the_system_prompt_is_the_first_block_of_every_call_and_the_rest_follows_it() -> None:
    """Over 30 calls the first content block is the system prompt alone, every time, while the
    changing sections follow it in a second block; the exact count still holds the budget."""
    calls = _replay(ConversationMemory(embedder=HashingEmbedder(64)), 30, 300)
    firsts = [messages[0]["content"] for messages in calls]
    assert all(isinstance(c, list) and c[0] == {"type": "text", "text": SYSTEM} for c in firsts)
    later = {str(c[1:]) for c in firsts[10:]}
    assert len(later) > 10  # the retrieved turns change from call to call, after the static block
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    assert prefix_share(calls, [SYSTEM] * len(calls), memory.counter) == 1.0


def test_a_pack_without_changing_sections_has_the_system_prompt_as_its_only_block() -> None:
    """A short conversation (nothing retrieved, no state) still renders the static block alone."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    memory.add("s", [{"role": "user", "content": "hi"}])
    pack = memory.context("s", budget=200, system=SYSTEM)
    assert pack.messages[0]["content"] == [{"type": "text", "text": SYSTEM}]


def test_the_prompt_plan_puts_an_anthropic_breakpoint_after_the_static_block() -> None:
    """A pack turned into a prompt plan caches up to the system prompt, not past it."""
    memory = ConversationMemory(embedder=HashingEmbedder(64))
    policy = " ".join(["Answer from the conversation only."] * 300)
    for i in range(30):
        memory.add("s", [{"role": "user", "content": f"Order {1000 + i} went to city {i}."},
                         {"role": "assistant", "content": f"Noted for {1000 + i}."}])  # fmt: skip
    pack = memory.context("s", budget=3000, system=policy, user="Where is order 1003?")
    plan = PromptPlan.from_request({"messages": pack.messages})
    prompt = anthropic_request(plan, "claude-sonnet-4-5")
    assert prompt.request["system"][0]["text"] == policy
    assert prompt.request["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in prompt.request["system"][1]
    assert [(b.location, b.index) for b in prompt.breakpoints] == [("system", 0)]
