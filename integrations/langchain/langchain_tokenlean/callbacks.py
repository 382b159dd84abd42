"""A LangChain callback handler that feeds tokenlean's :class:`~tokenlean.MetricsCollector`.

It times each chat model call from ``on_chat_model_start`` to ``on_llm_end`` (or
``on_llm_error``), reads the provider-reported ``usage_metadata`` (input, output and cached
input tokens) or, when there is none, counts the prompt with tokenlean's counter (labelled as an
estimate), and records the cost. A call answered from a cache (tokenlean's marker, or LangChain's
``total_cost: 0`` on cache hits) is recorded as a hit that spent no tokens. No prompt text is
stored or exported.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_tokenlean.memory import ROLES
from tokenlean import MetricsCollector, count_message_tokens

__all__ = ["TokenleanCallbackHandler"]


class TokenleanCallbackHandler(BaseCallbackHandler):
    """Records every chat model call into a :class:`MetricsCollector`.

    Args:
        collector: where the figures go.
        tenant: tenant label (hashed before it reaches any exporter).
        task: a task id set with ``collector.task(...)``, to count calls per task.
    """

    def __init__(self, collector: MetricsCollector, *, tenant: str | None = None,
                 task: str | None = None) -> None:  # fmt: skip
        self.collector = collector
        self.tenant = tenant
        self.task = task
        self._runs: dict[UUID, tuple[float, str, int]] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            *, run_id: UUID, **kwargs: Any) -> None:  # fmt: skip
        params = kwargs.get("invocation_params") or {}
        model = str(
            params.get("model") or params.get("model_name") or params.get("_type") or "unknown"
        )
        batch = messages[0] if messages else []
        estimate = count_message_tokens(
            [{"role": ROLES.get(m.type, "user"), "content": m.text} for m in batch], model=model
        ).total
        with self._lock:
            self._runs[run_id] = (time.perf_counter(), model, estimate)

    def _finish(self, run_id: UUID) -> tuple[float, str, int] | None:
        with self._lock:
            return self._runs.pop(run_id, None)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        started = self._finish(run_id)
        if started is None:
            return
        start, model, estimate = started
        latency = time.perf_counter() - start
        message = None
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration) and isinstance(
                    generation.message, AIMessage
                ):
                    message = generation.message
        usage = dict(message.usage_metadata or {}) if message is not None else {}
        meta = message.response_metadata if message is not None else {}
        model = str(meta.get("model_name") or meta.get("model") or model)
        marker = meta.get("tokenlean_cache")
        cache_hit = marker.get("layer") if isinstance(marker, dict) else None
        if cache_hit is None and usage.get("total_cost") == 0 and "input_tokens" in usage:
            cache_hit = "langchain"
        if "input_tokens" in usage and cache_hit is None:
            details = usage.get("input_token_details") or {}
            self.collector.record_request(
                model, input_tokens=int(usage["input_tokens"]),
                output_tokens=int(usage.get("output_tokens", 0)),
                cached_tokens=int(details.get("cache_read", 0)), latency_s=latency,
                usage_source="provider", estimated_input_tokens=estimate,
                tenant=self.tenant, task=self.task,
            )  # fmt: skip
        else:
            output = count_message_tokens([{"role": "assistant", "content": message.text}]).total \
                if message is not None and cache_hit is None else 0  # fmt: skip
            self.collector.record_request(
                model, input_tokens=estimate, output_tokens=output, latency_s=latency,
                usage_source="estimate", estimated_input_tokens=estimate, cache_hit=cache_hit,
                tenant=self.tenant, task=self.task,
            )  # fmt: skip

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        started = self._finish(run_id)
        if started is None:
            return
        start, model, estimate = started
        self.collector.record_request(
            model, input_tokens=estimate, output_tokens=0, latency_s=time.perf_counter() - start,
            usage_source="estimate", estimated_input_tokens=estimate, tenant=self.tenant,
            task=self.task, error=type(error).__name__,
        )  # fmt: skip
