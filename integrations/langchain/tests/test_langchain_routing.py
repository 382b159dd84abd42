"""routed_chat_model: the small model for easy requests, the large one otherwise."""

from __future__ import annotations

import asyncio

from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_tokenlean import routed_chat_model

from tokenlean import RuleGate


def test_requests_are_routed_and_unsure_answers_escalate() -> None:
    """Rules pick the large model; a doubted small answer is replaced by the large one's."""
    small = FakeListChatModel(responses=["small says hi", "small is unsure"])
    large = FakeListChatModel(responses=["large answer"])
    model = routed_chat_model(
        small, large, gates=[RuleGate(large_keywords=["contract"])],
        verifier=lambda request, message: 0.0 if "unsure" in message.text else 1.0,
    )  # fmt: skip
    assert model.invoke("hello").text == "small says hi"
    assert (
        model.invoke([SystemMessage("x"), HumanMessage("review this contract")]).text
        == "large answer"
    )
    assert model.invoke("another easy one").text == "large answer"  # escalated
    metrics = model.router.metrics.snapshot()  # type: ignore[attr-defined]
    assert metrics["requests"] == 3
    assert metrics["escalation_rate"] == round(1 / 3, 4)
    assert asyncio.run(model.ainvoke("hi again")).text == "small says hi"
    assert model.router.metrics.snapshot()["requests"] == 4  # type: ignore[attr-defined]
