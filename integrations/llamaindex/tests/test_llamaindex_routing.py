"""RoutedLLM: a LlamaIndex LLM routing between a small and a large LLM."""

from __future__ import annotations

import asyncio

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.llms import MockLLM
from llama_index.llms.tokenlean import RoutedLLM

from tokenlean import RuleGate


def test_calls_go_to_the_chosen_llm_and_doubted_answers_escalate() -> None:
    """Rules choose the large LLM; the verifier escalates; metrics count both."""
    small, large = MockLLM(max_tokens=2), MockLLM(max_tokens=6)
    llm = RoutedLLM(small, large, gates=[RuleGate(large_keywords=["contract"])],
                    verifier=lambda text, answer: 0.0 if "escalate" in text else 1.0)  # fmt: skip
    assert llm.complete("hello").text == "text text"
    assert llm.complete("review the contract").text == "text text text text text text"
    assert llm.complete("please escalate").text == "text text text text text text"
    chat = llm.chat([ChatMessage(role="user", content="hi")])
    assert chat.message.content == "text text"
    streamed = "".join(c.delta or "" for c in llm.stream_complete("hi"))
    assert streamed.strip() == "text text"
    assert asyncio.run(llm.acomplete("hi")).text == "text text"
    metrics = llm.router.metrics.snapshot()
    assert metrics["requests"] == 6
    assert metrics["escalation_rate"] == round(1 / 6, 4)


def test_async_calls_escalate_through_the_same_router() -> None:
    """achat and acomplete decide, escalate and count in the one core Router."""
    small, large = MockLLM(max_tokens=2), MockLLM(max_tokens=6)
    llm = RoutedLLM(small, large, verifier=lambda text, answer: 0.0 if "escalate" in text else 1.0)
    reply = asyncio.run(llm.achat([ChatMessage(role="user", content="please escalate")]))
    assert reply.message.content == "text text text text text text"
    assert asyncio.run(llm.acomplete("easy")).text == "text text"
    metrics = llm.router.metrics.snapshot()
    assert (metrics["requests"], metrics["escalation_rate"]) == (2, 0.5)
