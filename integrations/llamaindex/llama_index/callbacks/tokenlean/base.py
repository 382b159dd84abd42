"""A LlamaIndex instrumentation event handler feeding tokenlean's MetricsCollector.

Attach it to the root dispatcher (``get_dispatcher().add_event_handler(handler)``). It times
each LLM call from its start event to its end event, takes the provider-reported usage from the
response's ``raw`` payload when present (``usage.prompt_tokens`` / ``input_tokens``…) and
otherwise counts with tokenlean's counter (labelled as an estimate), and records a call answered
by tokenlean's ``CachedLLM`` as a cache hit that spent no tokens. No prompt text is kept.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.memory.tokenlean import to_tokenlean

from tokenlean import CallMetrics, MetricsRecorder, Usage, start_call

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


# The LLM call in progress in this context: a call an LLM makes inside another (MockLLM.chat
# through complete, a chat through a completion API) fires nested events, counted once.
_OUTER: ContextVar[str | None] = ContextVar("tokenlean_llm_call", default=None)


class TokenleanEventHandler(BaseEventHandler):
    """Records LLM calls seen by LlamaIndex instrumentation into a
    :class:`~tokenlean.MetricsCollector`, through the core's :func:`~tokenlean.start_call` (the
    same policy as the LangChain handler).

    A call's task and tenant come from ``instrument_tags({"tokenlean_task": ...,
    "tokenlean_tenant": ...})`` around it, or the handler's ``task`` and ``tenant``. A call an
    LLM makes inside another (its chat implemented by its completion, say) is counted once.
    """

    _collector: MetricsRecorder = PrivateAttr()
    _calls: dict[str, CallMetrics] = PrivateAttr(default_factory=dict)
    _nested: set[str] = PrivateAttr(default_factory=set)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    tenant: str | None = None
    task: str | None = None

    def __init__(self, collector: MetricsRecorder, **data: Any) -> None:
        super().__init__(**data)
        self._collector = collector

    @classmethod
    def class_name(cls) -> str:
        return "TokenleanEventHandler"

    def _start(self, key: str, event: LLMChatStartEvent | LLMCompletionStartEvent) -> None:
        outer = _OUTER.get()
        with self._lock:
            if outer is not None and outer in self._calls:
                self._nested.add(key)
                return
        info = event.model_dict or {}
        tags = event.tags or {}
        common: dict[str, Any] = {
            "model": next(
                (
                    str(name)
                    for name in (info.get("model"), info.get("model_name"), info.get("class_name"))
                    if name and name != "unknown"  # LLMMetadata's default model name
                ),
                key.split(".", 1)[0] or "unknown",  # a span id is "Class.method-uuid"
            ),
            "tenant": tags.get("tokenlean_tenant", self.tenant),
            "task": tags.get("tokenlean_task", self.task),
        }
        if isinstance(event, LLMChatStartEvent):
            messages = [to_tokenlean(m) for m in event.messages]
            call = start_call(self._collector, messages=messages, **common)
        else:
            call = start_call(self._collector, prompt=event.prompt, operation="text", **common)
        with self._lock:
            self._calls[key] = call
        _OUTER.set(key)

    def _end(self, key: str, event: LLMChatEndEvent | LLMCompletionEndEvent) -> None:
        with self._lock:
            if key in self._nested:
                self._nested.discard(key)
                return
            call = self._calls.pop(key, None)
        if _OUTER.get() == key:
            _OUTER.set(None)
        if call is None:
            return
        response = event.response
        if response is None:
            call.fail("NoResponse")
            return
        marker = (response.additional_kwargs or {}).get("tokenlean_cache")
        text = response.message.content if isinstance(response, ChatResponse) else response.text
        usage = _usage(response.raw)
        call.finish(
            usage=Usage(usage["input"], usage["output"], usage["cached"]) if usage else None,
            text=text,
            cache_hit=marker.get("layer") if isinstance(marker, dict) else None,
        )

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        key = str(event.span_id)
        if isinstance(event, LLMChatStartEvent | LLMCompletionStartEvent):
            self._start(key, event)
        elif isinstance(event, LLMChatEndEvent | LLMCompletionEndEvent):
            self._end(key, event)
