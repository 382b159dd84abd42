"""A LlamaIndex instrumentation event handler feeding tokenlean's MetricsCollector.

Attach it to the root dispatcher (``get_dispatcher().add_event_handler(handler)``). It times
each LLM call from its start event to its end event, takes the provider-reported usage from the
response's ``raw`` payload when present (``usage.prompt_tokens`` / ``input_tokens``…) and
otherwise counts with tokenlean's counter (labelled as an estimate), and records a call answered
by tokenlean's ``CachedLLM`` as a cache hit that spent no tokens. No prompt text is kept.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)

from tokenlean import MetricsCollector, count_message_tokens, count_tokens

__all__ = ["TokenleanEventHandler"]


def _usage(raw: Any) -> dict[str, int] | None:
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is None:
        return None
    get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
    prompt = get("prompt_tokens") or get("input_tokens")
    if prompt is None:
        return None
    details = get("prompt_tokens_details") or {}
    if isinstance(details, dict):
        cached = details.get("cached_tokens") or 0
    else:
        cached = getattr(details, "cached_tokens", 0) or 0
    read = get("cache_read_input_tokens") or 0
    write = get("cache_creation_input_tokens") or 0
    if read or write:  # Anthropic's input_tokens exclude cache reads and writes
        prompt = int(prompt) + int(read) + int(write)
        cached = read
    output = get("completion_tokens") or get("output_tokens") or 0
    return {"input": int(prompt), "output": int(output), "cached": int(cached)}


class TokenleanEventHandler(BaseEventHandler):
    """Records LLM calls seen by LlamaIndex instrumentation into a :class:`MetricsCollector`."""

    _collector: MetricsCollector = PrivateAttr()
    _starts: dict[str, tuple[float, str, int]] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    tenant: str | None = None

    def __init__(self, collector: MetricsCollector, **data: Any) -> None:
        super().__init__(**data)
        self._collector = collector

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        key = str(event.span_id)
        if isinstance(event, LLMChatStartEvent | LLMCompletionStartEvent):
            info = event.model_dict or {}
            model = str(
                info.get("model") or info.get("model_name") or info.get("class_name") or "unknown"
            )
            if isinstance(event, LLMChatStartEvent):
                estimate = count_message_tokens(
                    [{"role": m.role.value, "content": m.content or ""} for m in event.messages]
                ).total
            else:
                estimate = count_tokens(event.prompt)
            with self._lock:
                self._starts[key] = (time.perf_counter(), model, estimate)
        elif isinstance(event, LLMChatEndEvent | LLMCompletionEndEvent):
            with self._lock:
                started = self._starts.pop(key, None)
            if started is None or event.response is None:
                return
            start, model, estimate = started
            response = event.response
            marker = (response.additional_kwargs or {}).get("tokenlean_cache")
            cache_hit = marker.get("layer") if isinstance(marker, dict) else None
            text = response.message.content if isinstance(event, LLMChatEndEvent) else response.text
            usage = _usage(response.raw)
            latency = time.perf_counter() - start
            if usage is not None and cache_hit is None:
                self._collector.record_request(
                    model, input_tokens=usage["input"], output_tokens=usage["output"],
                    cached_tokens=usage["cached"], latency_s=latency, usage_source="provider",
                    estimated_input_tokens=estimate, tenant=self.tenant,
                )  # fmt: skip
            else:  # a cache hit records no tokens spent: counting its answer would be wasted
                output = count_tokens(text or "") if cache_hit is None else 0
                self._collector.record_request(
                    model, input_tokens=estimate, output_tokens=output,
                    latency_s=latency, usage_source="estimate", estimated_input_tokens=estimate,
                    cache_hit=cache_hit, tenant=self.tenant,
                )  # fmt: skip
