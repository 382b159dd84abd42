"""Plug a LangChain chat model into ``tokenlean bench`` in place of the simulated model.

``tokenlean bench --model-factory mypackage.models:factory`` calls ``factory(name)`` for the
main path (``"gpt-4o-mini"``) and the routed small path (``"gpt-4.1-nano"``, tried first in the
``all_levers`` variant, escalating when its answer says "I don't know"); return
``bench_model(ChatOpenAI(model=name))`` (or any chat model) from it. Tokens come from the
model's ``usage_metadata`` (cached input from ``input_token_details.cache_read``), latency is
measured, and an answer is correct when it contains the gold answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel

from langchain_tokenlean.memory import to_langchain
from tokenlean import count_message_tokens
from tokenlean.bench import BenchModel, BenchReply, Question

__all__ = ["bench_model"]


class _LangChainBenchModel:
    """A :class:`tokenlean.bench.BenchModel` over a LangChain chat model (one call at a time)."""

    def __init__(self, chat_model: BaseChatModel, name: str) -> None:
        self.chat_model = chat_model
        self.model = name

    def call(
        self,
        messages: list[dict[str, Any]],
        question: Question,
        *,
        counter: Callable[[str], int],
        tools: Sequence[Any] = (),
    ) -> BenchReply:
        start = time.perf_counter()
        reply = self.chat_model.invoke([to_langchain(m) for m in messages])
        latency = (time.perf_counter() - start) * 1000
        usage = dict(getattr(reply, "usage_metadata", None) or {})
        cached = int((usage.get("input_token_details") or {}).get("cache_read", 0))
        tokens = int(usage.get("input_tokens", 0))
        if not tokens:  # no usage reported: count the prompt ourselves
            tokens = count_message_tokens(messages, tools=tools or None, counter=counter).total
        text = str(reply.text)
        output = int(usage.get("output_tokens", 0)) or counter(text)
        return BenchReply(text, tokens, cached, output, latency)

    @staticmethod
    def is_correct(answer: str, gold: str) -> bool:
        return gold.lower() in answer.lower()


def bench_model(chat_model: BaseChatModel, name: str | None = None) -> BenchModel:
    """Wrap a LangChain chat model for the harness (``name``: its price-table model name)."""
    label = name or str(
        getattr(chat_model, "model_name", None) or getattr(chat_model, "model", "") or "unknown"
    )
    return _LangChainBenchModel(chat_model, label)
