"""Route LangChain chat calls between a small and a large model with tokenlean's Router.

``routed_chat_model(small, large, gates=…, verifier=…)`` returns a runnable (sync and async) that
takes what a chat model takes (a string, messages, or a prompt value), picks the path with the
gates (rules, a learned gate), runs it, and escalates a small answer the verifier doubts to the
large model. ``router.metrics`` has the share per path, escalations and costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableLambda

from tokenlean import Gate, Router

__all__ = ["routed_chat_model"]


def _text(value: LanguageModelInput) -> str:
    if isinstance(value, str):
        return value
    messages = value.to_messages() if hasattr(value, "to_messages") else value
    for message in reversed(list(messages)):
        if isinstance(message, BaseMessage) and message.type == "human":
            return message.text
        if isinstance(message, tuple) and message[0] in ("human", "user"):
            return str(message[1])
    return str(value)


def routed_chat_model(
    small: BaseChatModel,
    large: BaseChatModel,
    *,
    gates: Sequence[Gate] = (),
    verifier: Callable[[Any, Any], float] | None = None,
    min_confidence: float = 0.5,
    cost: dict[str, float] | None = None,
) -> RunnableLambda:  # type: ignore[type-arg]
    """A runnable routing each call to ``small`` or ``large``; its ``router`` attribute holds
    the :class:`~tokenlean.Router` and its metrics. ``verifier(input, message)`` scores a small
    answer's confidence in [0, 1]."""
    options: dict[str, Any] = {
        "gates": gates,
        "verifier": verifier,
        "min_confidence": min_confidence,
        "cost": cost,
        "text": _text,
    }
    router = Router(small=small.invoke, large=large.invoke, **options)

    def run(value: LanguageModelInput) -> Any:
        return router.run(value)

    async def arun(value: LanguageModelInput) -> Any:  # the same router, async paths
        return await router.arun(value, small=small.ainvoke, large=large.ainvoke)

    runnable = RunnableLambda(run, afunc=arun, name="tokenlean_router")
    runnable.router = router  # type: ignore[attr-defined]
    return runnable
