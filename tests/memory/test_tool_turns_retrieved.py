"""An agent's tool calls and tool results are older turns like any other: retrieval finds the
result that holds a looked-up fact, and the call whose arguments a question names."""

from __future__ import annotations

from typing import Any

import tokenlean as tl
from tokenlean.testing import HashingEmbedder


def _agent_run(orders: int = 12) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(orders):
        order = 1000 + i
        arguments = f'{{"order_id": "{order}"}}'
        call = {"id": f"c{i}", "type": "function",
                "function": {"name": "track_order", "arguments": arguments}}  # fmt: skip
        depot = ("Lyon", "Nantes", "Lille")[i % 3]
        out += [
            {"role": "user", "content": f"Where is order {order}?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {
                "role": "tool",
                "tool_call_id": f"c{i}",
                "content": f"Order {order}: depot {depot}, day {i}.",
            },
            {"role": "assistant", "content": "It is on its way."},
            {"role": "user", "content": "Thanks, anything else?"},
            {"role": "assistant", "content": f"Noted ({i})."},
        ]
    return out


def _memory() -> tl.ConversationMemory:
    memory = tl.ConversationMemory(
        embedder=HashingEmbedder(64), budget=tl.MemoryBudget(neighbours=0)
    )
    memory.add("s", _agent_run())
    return memory


def _id(memory: tl.ConversationMemory, role: str, needle: str) -> str:
    return next(
        t.id
        for t in memory.turns("s")
        if t.role == role and needle in (t.content + str(t.tool_calls))
    )


def test_a_tool_result_is_retrieved_for_the_fact_it_holds() -> None:
    memory = _memory()
    result = _id(memory, "tool", "Order 1004")
    for budget in (400, 250):
        pack = memory.context("s", budget=budget, user="What did the tracking say for 1004?")
        assert result in pack.sources()
        line = next(i.text for i in pack.items if i.sources == (result,))
        assert line.endswith("Order 1004: depot Nantes, day 4.")
        assert "] tool" in line
        assert pack.tokens <= budget


def test_a_tool_call_is_retrieved_by_its_arguments() -> None:
    memory = _memory()
    call = _id(memory, "assistant", '"order_id": "1007"')
    pack = memory.context("s", budget=250, user="Did you run track_order on 1007?")
    assert call in pack.sources()
    line = next(i.text for i in pack.items if i.sources == (call,))
    assert '[called track_order({"order_id": "1007"})]' in line
